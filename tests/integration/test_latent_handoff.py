"""Lune Latent Hand-off in the real ComfyUI: equals the stock VAEDecode → ImageScale → VAEEncode chain run in the
same prompt, for 4→16, 16→4 and 4→4 (SD1.5 ↔ SDXL) channel pairs; batches, progress, and clear refusals.

VAEs: the tiny Lune checkpoint's own (SD1.5, 4 channels), and the tiny TAESD-layout stand-ins for SDXL
(4 channels) and Flux (16 channels). Source latents are random tensors written as .latent files and read by the
stock LoadLatent, so every sample of a batch differs.
"""
from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from testbed import graphs
from testbed.env import place_model
from testbed.fixtures.sdxl_files import build_tiny_vae_files

pytestmark = pytest.mark.comfy

RTOL = 1e-3  # max|hand-off − stock| ≤ RTOL · max|stock| (bit-exact expected; slack for per-chunk VAE batching)
SOURCES = {"sd15": 4, "sdxl": 4, "flux": 16}
# (source, target, latent [B, C, h, w] without C, scale, expected output size in pixels (H, W))
CASES = [
    ("sd15", "flux", (1, 8, 10), 1.0, (64, 80)),     # 4 → 16
    ("flux", "sd15", (6, 8, 10), 1.3, (80, 104)),    # 16 → 4, 64×80 px · 1.3 = 83.2×104 → 80×104, two chunks
    ("sd15", "sdxl", (2, 8, 10), 1.5, (96, 120)),    # 4 → 4 (SD1.5 → SDXL)
    ("sdxl", "sd15", (5, 8, 10), 0.5, (32, 40)),     # 4 → 4 (SDXL → SD1.5), two chunks
]


@pytest.fixture(scope="module")
def vae_names(comfy, comfy_base, tiny_models):
    files = build_tiny_vae_files(None)
    return {
        "sdxl": place_model(comfy_base, "vae", files.vae_4ch_sdxl, "handoff_sdxl_4ch.safetensors"),
        "flux": place_model(comfy_base, "vae", files.vae_16ch_flux, "handoff_flux_16ch.safetensors"),
        "sd15": tiny_models["single_file"],
    }


def vae_node(family: str, names: dict) -> dict:
    if family == "sd15":
        return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": names["sd15"]}}
    return {"class_type": "VAELoader", "inputs": {"vae_name": names[family]}}


def vae_output(family: str) -> int:
    return 2 if family == "sd15" else 0


def write_latent(comfy_base, name: str, latent: torch.Tensor) -> str:
    """A .latent file (SaveLatent's layout, versioned so LoadLatent applies no factor) in ComfyUI's input/."""
    save_file({"latent_tensor": latent.contiguous(), "latent_format_version_0": torch.tensor([])},
              comfy_base / "input" / name)
    return name


def handoff_graph(latent_file: str, source: str, target: str, names: dict, scale: float, size: tuple[int, int],
                  prefix: str) -> dict:
    return {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": latent_file}},
        "2": vae_node(source, names),
        "3": vae_node(target, names),
        "4": {"class_type": "LuneLatentHandoff", "inputs": {
            "samples": ["1", 0], "source_vae": ["2", vae_output(source)], "target_vae": ["3", vae_output(target)],
            "scale": scale, "resize_method": "bicubic"}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": f"{prefix}_handoff"}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", vae_output(source)]}},
        "7": {"class_type": "ImageScale", "inputs": {"image": ["6", 0], "upscale_method": "bicubic",
                                                     "width": size[1], "height": size[0], "crop": "disabled"}},
        "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["3", vae_output(target)]}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": f"{prefix}_stock"}},
    }


def saved_latents(comfy, result) -> dict[str, torch.Tensor]:
    files = comfy.output_files(result, kind="latents")
    return {("handoff" if "_handoff" in f.name else "stock"): load_file(f)["latent_tensor"] for f in files}


@pytest.mark.parametrize("source,target,dims,scale,size", CASES, ids=[f"{s}-to-{t}" for s, t, *_ in CASES])
def test_handoff_equals_stock_decode_scale_encode(comfy, comfy_base, vae_names, source, target, dims, scale, size):
    batch, h, w = dims
    latent = torch.randn(batch, SOURCES[source], h, w, generator=torch.Generator().manual_seed(batch * 100 + h))
    name = write_latent(comfy_base, f"handoff_{source}_{target}.latent", latent)
    comfy_utils = importlib.import_module("comfy.utils")  # no server hook in-process: record the progress bar
    steps, previous = [], comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: steps.append((value, total)))
    try:
        result = comfy.run(handoff_graph(name, source, target, vae_names, scale, size, f"ho_{source}_{target}"))
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
    assert result.ok, result.error_message()
    out = saved_latents(comfy, result)
    handoff, stock = out["handoff"], out["stock"]
    assert handoff.shape == stock.shape == (batch, SOURCES[target], size[0] // 8, size[1] // 8)
    error = float((handoff - stock).abs().max() / stock.abs().max())
    print(f"{source}->{target} batch {batch} scale {scale}: max|Δ|/max|stock| = {error:.3e} (rtol {RTOL})")
    assert error <= RTOL
    assert not torch.equal(handoff[0], handoff[-1]) or batch == 1  # a batch stays a batch, in order
    assert steps == [(i + 1, -(-batch // 4)) for i in range(-(-batch // 4))]  # one step per chunk of 4


def test_mismatched_latent_is_refused_naming_both_families_then_next_prompt_runs(comfy, comfy_base, vae_names):
    flux_latent = write_latent(comfy_base, "handoff_wrong.latent", torch.randn(1, 16, 8, 8))
    wrong = handoff_graph(flux_latent, "flux", "sdxl", vae_names, 1.0, (64, 64), "ho_wrong")
    wrong["2"] = vae_node("sd15", vae_names)  # a 4-channel source VAE for a 16-channel latent
    wrong["4"]["inputs"]["source_vae"] = ["2", 2]
    for node in ("6", "7", "8", "9"):
        del wrong[node]
    result = comfy.run(wrong)
    assert not result.ok
    message = result.error_message()
    print(message)
    assert "16-channel SD3/Flux.1" in message and "4-channel SD1.5/SDXL" in message
    assert "source_vae must be the VAE of the model that made the latent" in message
    ok = handoff_graph(flux_latent, "flux", "sdxl", vae_names, 1.0, (64, 64), "ho_after")
    assert comfy.run(ok).ok


def test_lune_model_refusal_names_the_handoff_node(comfy, comfy_base, tiny_models):
    flux_latent = write_latent(comfy_base, "handoff_to_lune.latent", torch.randn(1, 16, 8, 8))
    g = graphs.txt2img(tiny_models["single_file"], prefix="ho_refused")
    g["4"] = {"class_type": "LoadLatent", "inputs": {"latent": flux_latent}}
    result = comfy.run(g)
    assert not result.ok
    assert "use Lune Latent Hand-off to convert it" in result.error_message()


def test_video_latent_is_refused_with_the_fix(comfy, comfy_base, vae_names):
    video = write_latent(comfy_base, "handoff_video.latent", torch.randn(1, 16, 3, 8, 8))
    g = handoff_graph(video, "flux", "sdxl", vae_names, 1.0, (64, 64), "ho_video")
    for node in ("6", "7", "8", "9"):
        del g[node]
    result = comfy.run(g)
    assert not result.ok
    message = result.error_message()
    assert "5-D" in message and "only image latents" in message and "Use an image model's latent" in message
