"""Bad-input matrix over HTTP: every node of the pack, each bad input refused with a message that names the
problem AND the fix, caught where it belongs (a node's execution error, or ComfyUI's 400 validation), and the
next valid prompt on the same server succeeds.

Runs against the session ``comfy_server``; the two "offline Hugging Face" cases need a server whose process
has ``HF_HUB_OFFLINE=1`` and an empty ``HF_HOME`` — a second server over its own base directory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from testbed.fixtures import bad_inputs
from testbed.fixtures import lyra_files, sd15_files
from testbed.fixtures.t5_files import build_t5_base
from testbed import graphs
from testbed.env import place_model
from testbed.server import execution_error
from testbed.hardening import (
    FROM_FILE,
    describe_failure,
    lune_latent_graph,
    lyra_graph,
    new_base,
    output_files,
    start_server,
    stock_graph,
    submit,
    succeeded,
    wait,
)

pytestmark = pytest.mark.comfy

WORDS = ("a serene mountain lake at dawn with mist over pine trees, golden light, reflections, oil painting, "
         "highly detailed, soft brush strokes, warm colours, quiet morning, distant birds, small wooden boat").split()
PROMPT_1000 = " ".join(WORDS[i % len(WORDS)] for i in range(770))  # exactly 1,000 CLIP-L tokens (14 chunks)


@dataclass
class Ctx:
    base: Path
    work: Path
    names: dict
    lyra_dir: Path
    tiny: sd15_files.Sd15Fixture
    index: int = 0

    def seed(self) -> int:
        return 1000 + self.index


@dataclass
class Prepared:
    prompt: dict
    after_queue: Callable[[], None] | None = None  # runs once the prompt is validated and queued


@dataclass
class Case:
    id: str
    node: str                      # the pack node under test
    build: Callable[[Ctx], Prepared]
    needles: tuple[str, ...] = ()  # problem, fix (case-insensitive)
    caught: str = ""               # node_type of the execution error, "validation" (400) or "success"
    server: str = "main"           # "main" (session comfy_server) or "offline" (HF_HUB_OFFLINE=1, empty HF_HOME)
    recover: str = "lune"          # the valid prompt run afterwards: "lune" or "lyra"
    extra: Callable[[Ctx, dict], None] | None = field(default=None, repr=False)


CASES: list[Case] = []


def case(id, node, needles=(), caught="", **kw):
    def deco(fn):
        CASES.append(Case(id, node, fn, tuple(needles), caught or node, **kw))
        return fn
    return deco


# ------------------------------------------------------------------------------------------------ helpers

def lune_bad_file(ctx: Ctx, folder: str, path: Path, **kw) -> Prepared:
    name = place_model(ctx.base, folder, path, f"hm_{path.name}")
    unet_only = folder == "diffusion_models"
    return Prepared(graphs.txt2img(name, clip_vae_from=ctx.names["single_file"] if unet_only else FROM_FILE,
                                   steps=2, prefix="hm_bad", **kw))


def prim_float(g: dict, value: float, node_id: str = "p") -> list:
    g[node_id] = {"class_type": "PrimitiveFloat", "inputs": {"value": value}}
    return [node_id, 0]


def latent_only(source: dict, **multiply) -> dict:
    """<latent source node> → LuneLatentMultiply → SaveLatent (no model involved)."""
    inputs = {"samples": ["1", 0], "mode": "fixed", "multiplier": 0.8, **multiply}
    return {"1": source, "2": {"class_type": "LuneLatentMultiply", "inputs": inputs},
            "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "hm_latent"}}}


def load_latent(ctx: Ctx, name: str, samples: torch.Tensor) -> dict:
    bad_inputs.write_latent(ctx.base / "input" / name, samples)
    return {"class_type": "LoadLatent", "inputs": {"latent": name}}


def lyra_folder(ctx: Ctx, name: str, *, model: Path | None = None, config: dict | None = None,
                weights_name: str = "model.pt") -> str:
    folder = ctx.work / name
    folder.mkdir(exist_ok=True)
    target = folder / weights_name
    if not target.exists():
        target.symlink_to(model or ctx.lyra_dir / "model.pt")
    lyra_files.write_config_json(folder / "config.json", config)
    place_model(ctx.base, "lyra", folder, name)
    return f"{name}/{weights_name}"


def lyra_prompt(ctx: Ctx, **kw) -> dict:
    kw.setdefault("lyra", ctx.names["lyra"])
    kw.setdefault("t5", ctx.names["t5"])
    return lyra_graph(kw.pop("ckpt", ctx.names["single_file"]), kw.pop("t5"), kw.pop("lyra"), seed=ctx.seed(),
                      prefix="hm_lyra", **kw)


# ------------------------------------------------------------------------------------------------ LuneModelLoader

@case("loader_sdxl", "LuneModelLoader", ("SDXL", "stock Load Checkpoint"))
def _(ctx):
    return lune_bad_file(ctx, "diffusion_models", sd15_files.write_sdxl_like_unet(ctx.work / "sdxl.safetensors"))


@case("loader_sd2", "LuneModelLoader", ("SD2", "stock loaders"))
def _(ctx):
    return lune_bad_file(ctx, "diffusion_models", sd15_files.write_sd2_like_unet(ctx.work / "sd2.safetensors"))


@case("loader_sd3_joint_blocks", "LuneModelLoader", ("SD3 MMDiT", "stock Load Checkpoint and an SD3 workflow"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints", bad_inputs.write_sd3_like(ctx.work / "sd3.safetensors"))


@case("loader_flux", "LuneModelLoader", ("Flux transformer", "Load Diffusion Model"))
def _(ctx):
    return lune_bad_file(ctx, "diffusion_models", sd15_files.write_flux_like(ctx.work / "flux.safetensors"))


@case("loader_sd15_inpaint", "LuneModelLoader", ("inpainting UNet (9 input channels)", "stock loaders"))
def _(ctx):
    return lune_bad_file(ctx, "diffusion_models", sd15_files.write_inpaint_sd15_like(ctx.work / "inpaint.safetensors"))


@case("loader_zero_byte", "LuneModelLoader", ("is empty (0 bytes)", "Download it again"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints", sd15_files.write_zero_byte(ctx.work / "empty.safetensors"))


@case("loader_truncated_header", "LuneModelLoader", ("truncated safetensors header", "Download it again"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints",
                         bad_inputs.write_truncated_header(ctx.tiny.single_file, ctx.work / "cut_header.safetensors"))


@case("loader_truncated_body", "LuneModelLoader", ("is truncated: its header describes", "Download it again"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints",
                         bad_inputs.write_truncated_body(ctx.tiny.single_file, ctx.work / "cut_body.safetensors"))


@case("loader_pt_optimizer_only", "LuneModelLoader",
      ("has no UNet inside", "Pick the checkpoint that holds the model weights"))
def _(ctx):
    return lune_bad_file(ctx, "diffusion_models", bad_inputs.write_optimizer_only_pt(ctx.work / "opt_only.pt"))


@case("loader_html_as_safetensors", "LuneModelLoader", ("HTML error page", "download it again"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints", bad_inputs.write_html_page(ctx.work / "page.safetensors"))


@case("loader_random_bytes", "LuneModelLoader",
      ("neither a safetensors file nor a PyTorch checkpoint", "download it again"))
def _(ctx):
    return lune_bad_file(ctx, "checkpoints", bad_inputs.write_random_bytes(ctx.work / "noise.safetensors"))


@case("loader_diffusers_broken_config", "LuneModelLoader", ("config.json is not valid JSON", "Restore the config.json"))
def _(ctx):
    weights = bad_inputs.write_broken_diffusers_folder(ctx.work / "broken_diffusers", ctx.tiny.diffusers_unet)
    name = place_model(ctx.base, "diffusion_models", weights.parents[1], "hm_broken_diffusers")
    return Prepared(graphs.txt2img(f"{name}/unet/{weights.name}", clip_vae_from=ctx.names["single_file"], steps=2))


@case("loader_lyra_file", "LuneModelLoader", ("Lyra CLIP+T5 fusion VAE", "load it with Load Lyra"))
def _(ctx):
    name = place_model(ctx.base, "diffusion_models", ctx.lyra_dir / "model.pt", "hm_lyra_model.pt")
    return Prepared(graphs.txt2img(name, clip_vae_from=ctx.names["single_file"], steps=2))


@case("loader_clip_vae_from_unet_only", "LuneModelLoader", ("has no CLIP and VAE inside", "Choose a full SD1.5"))
def _(ctx):
    unet_only = place_model(ctx.base, "checkpoints", ctx.tiny.bare_unet, "hm_unet_only_in_checkpoints.safetensors")
    return Prepared(graphs.txt2img(ctx.names["training_state"], clip_vae_from=unet_only, steps=2))


@case("loader_file_deleted_after_queueing", "LuneModelLoader", ("was not found", "press R"))
def _(ctx):
    """Listed and validated, then deleted while the prompt waits in the queue behind a slower one."""
    path = ctx.base / "models" / "checkpoints" / "hm_deleted.safetensors"
    if not path.exists():
        os.link(ctx.tiny.single_file, path)
    return Prepared(graphs.txt2img(path.name, steps=2), after_queue=path.unlink)


@case("loader_shift_negative_via_link", "LuneModelLoader", ("shift must be > 0", "trained at 2.0–2.5"))
def _(ctx):
    g = lune_latent_graph(ctx.names["single_file"], seed=ctx.seed())
    g["1"]["inputs"]["shift"] = prim_float(g, -1.0)
    return Prepared(g)


@case("loader_download_offline_empty_cache", "LuneModelLoader",
      ("offline", "Download it on a connected machine", "models/diffusion_models/AbstractPhil_sd15-flow-lune"),
      server="offline")
def _(ctx):
    return Prepared(graphs.txt2img("[download] AbstractPhil/sd15-flow-lune", steps=2))


# ------------------------------------------------------------------------------------------------ LuneShift

@case("shift_zero_widget", "LuneShift", ("smaller than min", "0.05"), caught="validation")
def _(ctx):
    return Prepared(lune_latent_graph(ctx.names["single_file"], shifts=(0.0,), seed=ctx.seed()))


@case("shift_negative_via_link", "LuneShift", ("shift must be > 0", "use 1.0 for no shift"))
def _(ctx):
    g = lune_latent_graph(ctx.names["single_file"], shifts=(2.0,), seed=ctx.seed())
    g["s0"]["inputs"]["shift"] = prim_float(g, -2.0)
    return Prepared(g)


@case("shift_absurd_via_link", "LuneShift", ("at most 20", "2.0–2.5 for Lune"))
def _(ctx):
    g = lune_latent_graph(ctx.names["single_file"], shifts=(2.0,), seed=ctx.seed())
    g["s0"]["inputs"]["shift"] = prim_float(g, 1e9)
    return Prepared(g)


@case("shift_on_sol_model", "LuneShift", ("given a Sol model", "straight to the sampler"))
def _(ctx):
    return Prepared(lune_latent_graph(ctx.names["single_file"], variant="sol", shifts=(2.0,), seed=ctx.seed()))


# ------------------------------------------------------------------------------------------------ LuneLatentMultiply

@case("multiply_nan_latent", "LuneLatentMultiply", ("NaN", "Re-sample it"))
def _(ctx):
    x = torch.randn(1, 4, 8, 8)
    x[0, 1, 2, 3] = float("nan")
    return Prepared(latent_only(load_latent(ctx, "hm_nan.latent", x)))


@case("multiply_inf_latent", "LuneLatentMultiply", ("1 Inf", "--force-fp32"))
def _(ctx):
    x = torch.randn(1, 4, 8, 8)
    x[0, 0, 0, 0] = float("inf")
    return Prepared(latent_only(load_latent(ctx, "hm_inf.latent", x)))


@case("multiply_16ch_sd3_latent", "LuneLatentMultiply", ("this latent has 16 (Flux/SD3)", "Use EmptyLatentImage"))
def _(ctx):
    return Prepared(latent_only({"class_type": "EmptySD3LatentImage",
                                 "inputs": {"width": 64, "height": 64, "batch_size": 1}}))


@case("multiply_video_latent", "LuneLatentMultiply", ("5-D latent", "Use EmptyLatentImage"))
def _(ctx):
    return Prepared(latent_only({"class_type": "EmptyHunyuanLatentVideo",
                                 "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}))


@case("multiply_nan_multiplier_via_link", "LuneLatentMultiply", ("out of range", "value below 1"))
def _(ctx):
    g = latent_only({"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}})
    g["2"]["inputs"]["multiplier"] = prim_float(g, float("nan"))
    return Prepared(g)


@case("multiply_variant_default_without_model", "LuneLatentMultiply", ("needs the model input", "mode auto or fixed"))
def _(ctx):
    return Prepared(latent_only({"class_type": "EmptyLatentImage",
                                 "inputs": {"width": 64, "height": 64, "batch_size": 1}}, mode="variant default"))


# ------------------------------------------------------------------------------------------------ sampling

@case("ksampler_16ch_latent_into_lune", "LuneModelLoader", ("this latent has 16 (Flux/SD3)", "Use EmptyLatentImage"),
      caught="KSampler")
def _(ctx):
    """A non-empty Flux/SD3 latent (ComfyUI silently widens only all-zero latents) into KSampler with a Lune model:
    refused by the Lune model_sampling patch instead of the UNet's conv error."""
    g = lune_latent_graph(ctx.names["single_file"], seed=ctx.seed())
    g["4"] = load_latent(ctx, "hm_flux16.latent", torch.randn(1, 16, 8, 8))
    return Prepared(g)


def _four_channel_latent_saved(ctx: Ctx, entry: dict) -> None:
    files = output_files(ctx.base, entry, "latents")
    assert len(files) == 1 and bad_inputs.read_latent(files[0]).shape == (1, 4, 8, 8)


@case("ksampler_empty_sd3_latent_is_adapted", "LuneModelLoader", caught="success", extra=_four_channel_latent_saved)
def _(ctx):
    """Not an error: ComfyUI itself narrows an all-zero 16-channel EmptySD3LatentImage to the model's 4 channels
    (comfy.sample.fix_empty_latent_channels) before the Lune patch sees it."""
    g = lune_latent_graph(ctx.names["single_file"], seed=ctx.seed())
    g["4"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return Prepared(g)


@case("adapter_16ch_latent", "LuneSamplerAdapter", ("this latent has 16 (Flux/SD3)", "Use EmptyLatentImage"),
      caught="SamplerCustom")
def _(ctx):
    g = graphs.with_adapter(graphs.txt2img(ctx.names["single_file"], steps=2), steps=2, seed=ctx.seed())
    g["4"] = load_latent(ctx, "hm_flux16b.latent", torch.randn(1, 16, 8, 8))
    return Prepared(g)


@case("adapter_on_stock_model", "LuneSamplerAdapter", ("needs a Lune model", "put Lune Flow Shift between"))
def _(ctx):
    g = stock_graph(ctx.names["single_file"], seed=ctx.seed())
    g["10"] = {"class_type": "LuneSamplerAdapter", "inputs": {"model": ["1", 0], "steps": 2, "denoise": 1.0}}
    g["5"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["1", 0], "add_noise": True, "noise_seed": 0, "cfg": 7.5, "positive": ["2", 0],
        "negative": ["3", 0], "sampler": ["10", 0], "sigmas": ["10", 1], "latent_image": ["4", 0]}}
    return Prepared(g)


@case("scheduler_lune_flow_on_stock_model", "LuneSamplerAdapter", ("lune_flow schedule needs a Lune model",
                                                                    "load it with Load Lune Model"), caught="KSampler")
def _(ctx):
    return Prepared(stock_graph(ctx.names["single_file"], seed=ctx.seed(), scheduler="lune_flow"))


# ------------------------------------------------------------------------------------------------ convert

def _no_conversion_left(ctx: Ctx, entry: dict) -> None:
    folder = ctx.base / "models" / "diffusion_models"
    assert not list(folder.glob("hm_convert_cut*.unet.safetensors")) and not list(folder.glob(".lune-convert-*"))


@case("convert_truncated_pt", "LuneConvertToSafetensors",
      ("could not be read as a PyTorch checkpoint", "download it again"), extra=_no_conversion_left)
def _(ctx):
    src = bad_inputs.write_prefix(ctx.tiny.training_state, ctx.work / "convert_cut.pt",
                                  ctx.tiny.training_state.stat().st_size // 3)
    name = place_model(ctx.base, "diffusion_models", src, "hm_convert_cut.pt")
    return Prepared({"1": {"class_type": "LuneConvertToSafetensors", "inputs": {"model_name": name}}})


# ------------------------------------------------------------------------------------------------ LyraLoader

@case("lyra_fusion_strategy_adaptive", "LyraLoader", ("fusion_strategy is 'adaptive_cantor'", "only 'cantor'"),
      recover="lyra")
def _(ctx):
    config = lyra_files.trainer_config({"fusion_strategy": "adaptive_cantor"})
    name = lyra_folder(ctx, "hm_lyra_adaptive", config=config)
    return Prepared(lyra_prompt(ctx, lyra=name))


@case("lyra_dims_t5_4096", "LyraLoader", ("do not match the config", "Use the config.json that ships"),
      recover="lyra")
def _(ctx):
    config = lyra_files.trainer_config({"modality_dims": {"clip": 768, "t5": 4096}})
    name = lyra_folder(ctx, "hm_lyra_dims", config=config)
    return Prepared(lyra_prompt(ctx, lyra=name))


@case("lyra_truncated_pt", "LyraLoader", ("truncated or corrupt", "Re-download"), recover="lyra")
def _(ctx):
    cut = lyra_files.write_truncated(ctx.lyra_dir / "model.pt", ctx.work / "lyra_cut.pt", fraction=0.5)
    return Prepared(lyra_prompt(ctx, lyra=lyra_folder(ctx, "hm_lyra_cut", model=Path(cut))))


@case("lyra_sd15_checkpoint_in_lyra_folder", "LyraLoader",
      ("is not a Lyra v1", "Use model.pt from AbstractPhil/vae-lyra"), recover="lyra")
def _(ctx):
    name = lyra_folder(ctx, "hm_lyra_sd15", model=ctx.tiny.single_file, weights_name="model.safetensors")
    return Prepared(lyra_prompt(ctx, lyra=name))


@case("lyra_download_offline_empty_cache", "LyraLoader", ("offline", "Download it on a connected machine"),
      server="offline")
def _(ctx):
    return Prepared({
        "1": {"class_type": "LyraLoader", "inputs": {"lyra_name": "[download] AbstractPhil/vae-lyra"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    })


# ------------------------------------------------------------------------------------------------ LyraEncode

@case("encode_t5_xxl_instead_of_t5_base", "LyraEncode", ("T5-XXL", "CLIPLoader type stable_audio"), recover="lyra")
def _(ctx):
    return Prepared(lyra_prompt(ctx, t5=ctx.names["t5xxl"]))


@case("encode_empty_clip_from_unet_only_file", "LyraEncode", ("clip is empty", "Connect the CLIP of an SD1.5"),
      recover="lyra")
def _(ctx):
    return Prepared(lyra_prompt(ctx, ckpt=ctx.names["training_state"]))


@case("encode_t5_in_clip_socket", "LyraEncode", ("clip is t5-base", "Connect the CLIP of an SD1.5"), recover="lyra")
def _(ctx):
    return Prepared(lyra_prompt(ctx, clip=["2", 0]))


def _png_written(ctx: Ctx, entry: dict) -> None:
    files = output_files(ctx.base, entry, "images")
    assert files and all(f.is_file() and f.stat().st_size > 0 for f in files)


@case("encode_prompt_of_1000_tokens", "LyraEncode", caught="success", extra=_png_written)
def _(ctx):
    """README long-prompt policy: chunk 0 goes through Lyra, the other 13 chunks pass through as plain CLIP."""
    return Prepared(lyra_prompt(ctx, positive=PROMPT_1000))


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ctx(comfy_base, tiny_models, tiny_sd15, tmp_path_factory) -> Ctx:
    lyra_dir = bad_inputs.build_lyra_folder()
    names = dict(tiny_models)
    names["lyra"] = place_model(comfy_base, "lyra", lyra_dir, "hm_lyra") + "/model.pt"
    names["t5"] = place_model(comfy_base, "text_encoders", build_t5_base(), "t5_base_random.safetensors")
    names["t5xxl"] = place_model(comfy_base, "text_encoders", build_t5_base(width=4096), "t5xxl_lookalike.safetensors")
    return Ctx(base=comfy_base, work=tmp_path_factory.mktemp("hardening_matrix"), names=names, lyra_dir=lyra_dir,
               tiny=tiny_sd15)


@pytest.fixture(scope="module")
def offline(tiny_sd15, tmp_path_factory):
    """A second server: HF_HUB_OFFLINE=1 and an empty HF_HOME (its own base dir, so its start-up does not touch
    the session server's temp/ and output/)."""
    root = tmp_path_factory.mktemp("offline")
    (root / "hf_home").mkdir()
    base = new_base(root / "base", models={"checkpoints": {"lune_tiny_single.safetensors": tiny_sd15.single_file}})
    server = start_server(base, HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf_home"), HF_HUB_CACHE=None,
                          HUGGINGFACE_HUB_CACHE=None, OMP_NUM_THREADS="1")
    try:
        yield server
    finally:
        server.stop()
        written = [p for p in (root / "hf_home").rglob("*") if p.is_file()]
        assert not written, f"an offline server wrote into the Hugging Face cache: {written}"


def _blocker(ctx: Ctx) -> dict:
    """A prompt that keeps the queue busy for a moment (256×256 on the tiny UNet)."""
    return lune_latent_graph(ctx.names["single_file"], size=256, steps=3, seed=ctx.seed(), prefix="hm_blocker")


def _run(server, ctx: Ctx, prepared: Prepared) -> dict:
    if prepared.after_queue is None:
        return server.run(prepared.prompt)
    blocker_id, body = submit(server, _blocker(ctx))
    assert blocker_id, body
    prompt_id, body = submit(server, prepared.prompt)
    assert prompt_id, f"the prompt must pass validation before the file goes away: {body}"
    queue = server.get("/queue")
    assert prompt_id in [item[1] for item in queue["queue_pending"]], "the blocker finished too early"
    prepared.after_queue()
    wait(server, blocker_id)
    return wait(server, prompt_id)


def _recovery(ctx: Ctx, case: Case, server_kind: str) -> dict:
    if case.recover == "lyra":
        return lyra_prompt(ctx)
    name = ctx.names["single_file"] if server_kind == "main" else "lune_tiny_single.safetensors"
    return graphs.txt2img(name, steps=2, seed=ctx.seed(), prefix="hm_recover")


def _message(entry: dict) -> tuple[str, str]:
    """(where it was caught, the message the user sees)."""
    if "rejected" in entry:
        errors = [e for node in entry["rejected"].get("node_errors", {}).values() for e in node["errors"]]
        return "validation (400)", json.dumps(errors) if errors else json.dumps(entry["rejected"])
    err = execution_error(entry)
    assert err is not None, f"no execution_error in {entry.get('status')}"
    return err["node_type"], err["exception_message"]


def test_matrix_has_twenty_distinct_cases_over_every_node():
    error_cases = [c for c in CASES if c.caught != "success"]
    assert len({c.id for c in CASES}) == len(CASES) and len(error_cases) >= 20
    assert {c.node for c in CASES} == {"LuneModelLoader", "LuneShift", "LuneLatentMultiply", "LuneSamplerAdapter",
                                       "LuneConvertToSafetensors", "LyraLoader", "LyraEncode"}
    assert all(len(c.needles) >= 2 for c in error_cases), "each case names the problem and the fix"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, comfy_server, request):
    ctx.index = CASES.index(case)
    server = comfy_server if case.server == "main" else request.getfixturevalue("offline")
    prepared = case.build(ctx)
    entry = _run(server, ctx, prepared)

    if case.caught == "success":
        assert succeeded(entry), describe_failure(entry)
        print(f"\n[matrix] {case.id}: success")
    else:
        assert not succeeded(entry), "the bad prompt must not succeed"
        where, message = _message(entry)
        print(f"\n[matrix] {case.id}: {where} → {message[:400]}")
        expected = "validation (400)" if case.caught == "validation" else case.caught
        assert where == expected, f"caught by {where}, expected {expected}: {message}"
        for needle in case.needles:
            assert needle.lower() in message.lower(), f"{needle!r} not in: {message}"
        assert "Traceback" not in message
    if case.extra:
        case.extra(ctx, entry)

    good = server.run(_recovery(ctx, case, case.server))
    assert succeeded(good), f"the next valid prompt failed: {describe_failure(good)}"
