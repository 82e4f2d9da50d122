"""Lune Discrete Schedule on an SDXL-architecture checkpoint (random weights, testbed/fixtures/sdxl_files.py) in the
real ComfyUI: stock Load Checkpoint → node → KSampler → VAE Decode end to end, and the v_pred/ztsnr report.

The fixture holds full-size CLIP-L + CLIP-G (≈ 4 GB RSS once loaded): marked slow, run under the heavy-job lock.
"""
from __future__ import annotations

import logging

import pytest
import torch

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

SQCU = {"prediction": "v_prediction", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.024,
        "zero_terminal_snr": True}


@pytest.fixture(scope="module")
def sdxl_name(comfy, comfy_base):
    from testbed.env import place_model
    from testbed.fixtures.sdxl_files import build_sdxl_fixture

    return place_model(comfy_base, "checkpoints", build_sdxl_fixture(None).single_file, "sdxl_tiny.safetensors")


def sdxl_graph(ckpt_name: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "LuneDiscreteSchedule", "inputs": {"model": ["1", 0], **SQCU}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 7, "steps": 4, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"{prefix}_latent"}},
    }


def test_sdxl_checkpoint_through_the_node_end_to_end(comfy, sdxl_name):
    from PIL import Image
    from safetensors.torch import load_file

    result = comfy.run(sdxl_graph(sdxl_name, "discrete_sdxl"))
    assert result.ok, result.error_message()
    image = comfy.output_files(result)[0]
    with Image.open(image) as im:
        assert im.size == (64, 64)
    latent = load_file(comfy.output_files(result, "latents")[0])["latent_tensor"]
    assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all() and latent.std() > 0


@torch.no_grad()
def test_sdxl_v_pred_ztsnr_keys_are_reported_and_table_is_right(comfy, sdxl_name, caplog):
    """A file carrying ComfyUI's ``v_pred`` and ``ztsnr`` keys loads as V_PREDICTION + zsnr; the node says so and
    installs the strictly increasing table (ComfyUI's own zsnr table at these betas would not be)."""
    node = comfy.nodes.NODE_CLASS_MAPPINGS["LuneDiscreteSchedule"]()
    from comfy import model_sampling as ms
    from comfy.sd import load_state_dict_guess_config
    from safetensors import safe_open

    import folder_paths

    with safe_open(folder_paths.get_full_path("checkpoints", sdxl_name), "pt") as handle:  # UNet keys only
        sd = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("model.diffusion_model.")}
    sd["v_pred"], sd["ztsnr"] = torch.tensor([]), torch.tensor([])
    model = load_state_dict_guess_config(sd, output_vae=False, output_clip=False)[0]
    del sd
    assert type(model.model.model_config).__name__ == "SDXL"
    with caplog.at_level(logging.INFO, logger="lune"):
        patched = node.patch(model, **SQCU)[0]
    messages = [r.getMessage() for r in caplog.records]
    assert any("this MODEL (SDXL) was loaded as V_PREDICTION with zsnr" in m for m in messages), messages
    sampling = patched.get_model_object("model_sampling")
    assert isinstance(sampling, ms.V_PREDICTION) and sampling.zsnr and sampling.linear_end == 0.024
    assert (sampling.sigmas[1:] > sampling.sigmas[:-1]).all()
    assert float(sampling.sigma_max) == pytest.approx(22640.27, rel=1e-6)
    stock = model.get_model_object("model_sampling")
    assert isinstance(stock, ms.V_PREDICTION) and stock.zsnr, "ComfyUI's own detection of the keys"
    assert float(stock.sigma_max) == pytest.approx(4518.76, rel=1e-5), "stock table keeps ComfyUI's constant top"
