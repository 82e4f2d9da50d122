"""The SD1.5 fixture builder: every format holds the same UNet, shapes equal ComfyUI's, bad inputs are bad.

The full-size checks are marked ``slow`` (CI runs them; deselect with -m 'not slow'): the full set is 15 GB on
disk (the training-state .pt alone is 10.3 GB, like the real one), ~35 s to build once into the cache, ~35 s and
~8 GB RSS to verify.
"""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import time
import zipfile
from typing import Iterator

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from comfyui_lune.lune.architecture import unet_layout
from testbed.fixtures import sd15_files as fx
from testbed.comfy_path import comfy_available, import_comfy

needs_comfy = pytest.mark.skipif(not comfy_available(), reason="ComfyUI test install not found (COMFYUI_PATH)")


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8),
                                                                     b.contiguous().view(torch.uint8))


def strip(sd: dict, prefix: str) -> dict:
    assert all(k.startswith(prefix) for k in sd)
    return {k[len(prefix):]: v for k, v in sd.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return fx.build_sd15_fixtures(tmp_path_factory.mktemp("sd15"), "tiny")


def unets_from_every_format(f: fx.Sd15Fixture) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Each file read directly (no pack code), brought to LDM keys (no prefix) and the fixture dtype; one at a
    time so the full-size check holds a single extra UNet in memory. The UNet-only files of ``full`` carry the
    diffusers names of ComfyUI's map; the end-to-end check through the loader is
    tests/integration/test_lune_formats_full.py."""
    with safe_open(f.single_file, "pt") as h:
        yield "single_file", {k[len(fx.LDM_UNET_PREFIX):]: h.get_tensor(k)
                              for k in h.keys() if k.startswith(fx.LDM_UNET_PREFIX)}
    to_ldm = {k: k for k in fx.ldm_unet_shapes(f.spec)} if f.unet_only_names == "ldm" else {
        d: k for k, d in fx.diffusers_names(f.spec).items()}
    yield "diffusers", {to_ldm[k]: v for k, v in load_file(f.diffusers_unet).items()}
    yield "bare_unet", {to_ldm[k]: v for k, v in load_file(f.bare_unet).items()}
    state = torch.load(f.training_state, map_location="cpu", weights_only=True, mmap=True)
    student = strip(state["student"], f.student_prefix)
    assert all(v.dtype == torch.float32 for v in student.values())
    yield "training_state", {to_ldm[k]: v.to(f.dtype) for k, v in student.items()}


def assert_same_unet(f: fx.Sd15Fixture) -> None:
    reference = fx.reference_unet(f.size, f.seed, f.dtype)
    for name, unet in unets_from_every_format(f):
        assert unet.keys() == reference.keys(), name
        bad = [k for k in reference if not bitwise_equal(unet[k], reference[k])]
        assert not bad, f"{name}: {bad[:3]}"
        del unet


def test_tiny_files_exist_and_are_cached(tiny, tmp_path):
    for name, path in tiny.paths().items():
        assert path.is_file() and path.stat().st_size > 0, name
    started = time.perf_counter()
    again = fx.build_sd15_fixtures(tmp_path / "again", "tiny")
    assert time.perf_counter() - started < 1.0
    assert os.path.samefile(again.single_file, tiny.single_file)


def test_tiny_build_is_fast(tmp_path):
    started = time.perf_counter()
    f = fx.build_sd15_fixtures(tmp_path / "out", "tiny", seed=7, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 15  # ~2.5 s on 2 cores
    assert (tmp_path / "cache" / f"sd15-tiny-seed7-float16-v{fx.BUILDER_VERSION}" / "manifest.json").is_file()
    assert f._unet_ldm is not None and len(f.unet_ldm) == 122


def test_every_format_holds_the_same_unet(tiny):
    assert_same_unet(tiny)


def test_seeds_differ_and_are_deterministic():
    a, b = fx.reference_unet("tiny", 0), fx.reference_unet("tiny", 1)
    assert not torch.equal(a["out.2.weight"], b["out.2.weight"])
    assert all(bitwise_equal(a[k], v) for k, v in fx.reference_unet("tiny", 0).items())
    assert all(torch.isfinite(v.float()).all() for v in a.values())


def test_single_file_contents(tiny):
    with safe_open(tiny.single_file, "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    clip = {k for k in keys if k.startswith(fx.CLIP_PREFIX)}
    assert len(clip) == 197 and fx.CLIP_PREFIX + "encoder.layers.11.mlp.fc2.weight" in clip
    vae = {k for k in keys if k.startswith(fx.VAE_PREFIX)}
    assert fx.VAE_PREFIX + "taesd_decoder.1.weight" in vae and fx.VAE_PREFIX + "vae_scale" in vae
    assert len(keys) == len(clip) + len(vae) + 122


def test_tiny_unet_only_files_use_ldm_names(tiny):
    """Tiny diffusers-key UNets cannot load in ComfyUI (it recognises diffusers names only at full size)."""
    assert tiny.unet_only_names == "ldm"
    for path in (tiny.diffusers_unet, tiny.bare_unet):
        assert unet_layout(load_file(path)) == "ldm"
    student = torch.load(tiny.training_state, map_location="cpu", weights_only=True, mmap=True)["student"]
    assert unet_layout(strip(student, tiny.student_prefix)) == "ldm"


def test_diffusers_config_describes_weights(tiny):
    config = json.loads(tiny.diffusers_config.read_text())
    assert config["_class_name"] == "UNet2DConditionModel"
    assert config["block_out_channels"] == [320] and config["mid_block_type"] is None
    with safe_open(tiny.diffusers_unet, "pt") as f:
        assert f.metadata() == {"format": "pt"}
    with safe_open(tiny.bare_unet, "pt") as f:
        assert f.metadata() is None


def test_training_state_is_cuda_tagged(tiny):
    seen: set[str] = set()

    def record(storage, location):
        seen.add(location)
        return storage

    state = torch.load(tiny.training_state, map_location=record, weights_only=True)
    assert seen == {"cuda:0"}
    assert set(state) == {"student", "cfg", "opt", "sched", "gstep"}
    assert state["gstep"] == fx.TRAINING_GSTEP and state["cfg"]["shift"] == 2.0
    assert all(k.startswith("module._orig_mod.") for k in state["student"])
    params = list(state["student"].values())
    opt = state["opt"]
    assert opt["param_groups"][0]["params"] == list(range(len(params)))
    for i, p in enumerate(params):
        s = opt["state"][i]
        assert s["exp_avg"].shape == s["exp_avg_sq"].shape == p.shape
        assert s["exp_avg"].dtype == torch.float32 and float(s["step"]) == fx.TRAINING_GSTEP
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="(?i)cuda"):
            torch.load(tiny.training_state, weights_only=True)


def test_fixture_shapes_equal_comfyui_modules_without_comfy_import():
    """Counts that document the sizes (docs/reference.md §4); the per-key check against ComfyUI is below."""
    full = fx.ldm_unet_shapes(fx.UNET_ARCHS["full"])
    assert len(full) == 686
    assert sum(torch.Size(s).numel() for s in full.values()) == 859_520_964
    assert sum(torch.Size(s).numel() for s in fx.taesd_shapes().values()) == 2_445_065
    assert sum(torch.Size(s).numel() for s in fx.kl_vae_shapes().values()) == 83_653_863


@needs_comfy
def test_shapes_match_comfyui():
    import_comfy()
    import comfy.ldm.models.autoencoder as autoencoder
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    def shapes(module):
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    for spec in list(fx.UNET_ARCHS.values()) + list(fx.FOREIGN_ARCHS.values()):
        assert shapes(UNetModel(**spec.comfy_unet_config(), device="meta")) == fx.ldm_unet_shapes(spec), spec
    clip = {k.removeprefix("transformer.text_model."): s
            for k, s in shapes(comfy.sd1_clip.SDClipModel(device="meta")).items()}
    ours = fx.clip_l_shapes()
    assert set(clip) - set(ours) == {"logit_scale", "transformer.text_projection.weight"}  # not in SD1.5 files
    assert set(ours) - set(clip) == {"embeddings.position_ids"}  # stored by old checkpoints, ignored on load
    assert all(clip[k] == s for k, s in ours.items() if k in clip)
    assert shapes(comfy.taesd.taesd.TAESD()) == fx.taesd_shapes()
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        vae = autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    assert shapes(vae) == fx.kl_vae_shapes()


@needs_comfy
def test_comfyui_loads_tiny_single_file_as_sd15(tiny):
    import_comfy()
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(tiny.single_file), return_metadata=True)
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(sd, metadata=metadata)
    assert type(model.model.model_config).__name__ == "SD15"
    assert type(vae.first_stage_model).__name__ == "TAESD" and clip is not None
    loaded = model.model.diffusion_model.state_dict()
    reference = tiny.unet_ldm
    assert all(bitwise_equal(loaded[k].to(tiny.dtype), v) for k, v in reference.items())


# ------------------------------------------------------------------------------------------------- bad inputs

def test_truncated_and_empty(tiny, tmp_path):
    cut = fx.write_truncated_safetensors(tiny.bare_unet, tmp_path / "cut.safetensors", 1000)
    assert cut.stat().st_size == 1000
    with pytest.raises(SafetensorError):
        load_file(cut)
    assert fx.write_zero_byte(tmp_path / "empty.safetensors").stat().st_size == 0
    with pytest.raises(ValueError):
        fx.write_truncated_safetensors(tiny.bare_unet, tmp_path / "x", tiny.bare_unet.stat().st_size)


def test_ckpt_named_safetensors(tiny, tmp_path):
    path = fx.write_ckpt_as_safetensors(tmp_path / "model.safetensors",
                                        {"model.diffusion_model.out.2.bias": torch.zeros(4)})
    assert zipfile.is_zipfile(path)
    # torch.load(<path ending .safetensors>) hands the file to safetensors (torch 2.14), so read it via a handle
    with open(path, "rb") as handle:
        assert torch.load(handle, weights_only=True)["state_dict"]["model.diffusion_model.out.2.bias"].shape == (4,)


def test_malicious_pickle_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = fx.write_malicious_pt(tmp_path / "evil.pt", marker)
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ("GLOBAL", "__builtin__ exec") in ops or ("GLOBAL", "builtins exec") in ops  # protocol 2 / 3+
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("writer, style, check", [
    (fx.write_sdxl_like_unet, "ldm", lambda sd: sd["model.diffusion_model.label_emb.0.0.weight"].shape == (1280, 2816)
     and sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 2048)),
    (fx.write_sdxl_like_unet, "diffusers", lambda sd: sd["add_embedding.linear_1.weight"].shape == (1280, 2816)
     and sd["down_blocks.0.attentions.0.proj_in.weight"].ndim == 2),
    (fx.write_sd2_like_unet, "ldm", lambda sd: sd["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2
     and sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 1024)),
    (fx.write_sd2_like_unet, "diffusers",
     lambda sd: sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 1024)),
    (fx.write_inpaint_sd15_like, "ldm", lambda sd: sd["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9),
    (fx.write_inpaint_sd15_like, "diffusers", lambda sd: sd["conv_in.weight"].shape == (320, 9, 3, 3)),
])
def test_foreign_unets(tmp_path, writer, style, check):
    if style == "diffusers" and not comfy_available():
        pytest.skip("diffusers names come from ComfyUI's map (COMFYUI_PATH)")
    sd = load_file(writer(tmp_path / "m.safetensors", style=style))
    assert check(sd)


def test_flux_like(tmp_path):
    sd = load_file(fx.write_flux_like(tmp_path / "flux.safetensors"))
    assert sd["img_in.weight"].shape == (3072, 64) and any(k.startswith("double_blocks.0.") for k in sd)
    assert unet_layout(sd) is None


# ------------------------------------------------------------------------------------------------- full size

@pytest.mark.slow

def test_full_size_fixture(tmp_path):
    started = time.perf_counter()
    f = fx.build_sd15_fixtures(tmp_path, "full")
    print(f"full fixture ready in {time.perf_counter() - started:.1f} s:",
          {n: p.stat().st_size for n, p in f.paths().items()})
    with safe_open(f.diffusers_unet, "pt") as h:
        keys = set(h.keys())
    assert len(keys) == 686 and unet_layout(keys) == "diffusers"
    assert_same_unet(f)


@pytest.mark.slow

@needs_comfy
def test_comfyui_detects_full_diffusers_unet_as_sd15(tmp_path):
    """ComfyUI's own diffusers path accepts the full-size diffusers file (its hard-coded SD15 layout)."""
    import_comfy()
    import comfy.sd

    f = fx.build_sd15_fixtures(tmp_path, "full")
    model = comfy.sd.load_diffusion_model_state_dict(load_file(f.bare_unet))
    assert type(model.model.model_config).__name__ == "SD15"
    loaded = model.model.diffusion_model.state_dict()
    reference = f.unet_ldm
    assert all(bitwise_equal(loaded[k].to(f.dtype), v) for k, v in reference.items())
