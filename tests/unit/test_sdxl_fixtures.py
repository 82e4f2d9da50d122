"""The SDXL fixture checkpoint is detected by ComfyUI as SDXL; its parts and the tiny VAE files have ComfyUI's shapes.

The full load (``load_checkpoint_guess_config`` on the 1.9 GB file, ~4 GB RSS) is marked ``slow``; run it under
the shared heavy-job lock.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from testbed.comfy_path import comfy_available, import_comfy
from testbed.fixtures import sd15_files, sdxl_files as fx

needs_comfy = pytest.mark.skipif(not comfy_available(), reason="ComfyUI test install not found (COMFYUI_PATH)")


@pytest.fixture(scope="module")
def sdxl():
    return fx.build_sdxl_fixture(None)


@pytest.fixture(scope="module")
def vaes():
    return fx.build_tiny_vae_files(None)


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def read_prefixed(path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}


def test_file_holds_the_generated_components(sdxl):
    with safe_open(sdxl.single_file, "pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
        scale = handle.get_tensor(fx.VAE_PREFIX + "vae_scale")
        first_unet_key = next(iter(fx.sdxl_unet_shapes()))
        stored = handle.get_tensor(fx.LDM_UNET_PREFIX + first_unet_key)
    expected = {c.prefix + k for c in fx.sdxl_components() for k in c.shapes}
    assert keys == expected
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert scale.item() == pytest.approx(fx.SDXL_SCALE_FACTOR, rel=1e-3)  # fp16-rounded
    regenerated = sd15_files.random_state_dict(fx.sdxl_unet_shapes(), sdxl.seed, "sdxl_unet", sdxl.dtype)
    assert torch.equal(stored, regenerated[first_unet_key])


@needs_comfy
def test_unet_shapes_match_comfyui():
    import_comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    assert shapes(UNetModel(**fx.sdxl_unet_config(), device="meta")) == fx.sdxl_unet_shapes()


@needs_comfy
def test_comfyui_detects_the_unet_as_sdxl(sdxl):
    import_comfy()
    import comfy.latent_formats
    import comfy.model_detection
    import comfy.supported_models

    unet = read_prefixed(sdxl.single_file, fx.LDM_UNET_PREFIX)
    detected = comfy.model_detection.detect_unet_config(unet, fx.LDM_UNET_PREFIX)
    shared = set(detected) & set(sdxl.unet_config)
    assert {"transformer_depth", "context_dim", "adm_in_channels", "model_channels"} <= shared
    assert {k: detected[k] for k in shared} == {k: sdxl.unet_config[k] for k in shared}
    config = comfy.model_detection.model_config_from_unet(unet, fx.LDM_UNET_PREFIX)
    assert type(config) is comfy.supported_models.SDXL
    assert isinstance(config.latent_format, comfy.latent_formats.SDXL)
    assert config.latent_format.scale_factor == fx.SDXL_SCALE_FACTOR


@needs_comfy
def test_text_encoders_cover_comfyui_sdxl_clip(sdxl):
    import_comfy()
    import comfy.sdxl_clip
    import comfy.supported_models

    stored = {}
    with safe_open(sdxl.single_file, "pt") as handle:
        for key in handle.keys():
            if key.startswith("conditioner."):
                stored[key] = handle.get_slice(key).get_shape()
    placeholders = {k: torch.empty(s, device="meta") for k, s in stored.items()}
    config = comfy.supported_models.SDXL(fx.sdxl_unet_config())
    converted = {k: tuple(v.shape) for k, v in config.process_clip_state_dict(placeholders).items()}
    expected = shapes(comfy.sdxl_clip.SDXLClipModel(device="meta"))
    missing = set(expected) - set(converted)
    assert missing <= {"clip_l.logit_scale", "clip_l.transformer.text_projection.weight", "clip_g.logit_scale"}
    assert set(converted) - set(expected) == {"clip_l.transformer.text_model.embeddings.position_ids"}
    assert all(expected[k] == s for k, s in converted.items() if k in expected)


@needs_comfy
def test_vae_files_load_with_their_latent_width(vaes):
    import_comfy()
    import comfy.sd

    for path, channels, scale, shift in ((vaes.vae_4ch_sdxl, 4, fx.SDXL_SCALE_FACTOR, 0.0),
                                         (vaes.vae_16ch_flux, 16, fx.FLUX_SCALE_FACTOR, fx.FLUX_SHIFT_FACTOR)):
        vae = comfy.sd.VAE(sd=load_file(path))
        assert vae.latent_channels == channels
        assert type(vae.first_stage_model).__name__ == "TAESD"
        assert vae.first_stage_model.vae_scale.item() == pytest.approx(scale, rel=1e-3)
        assert vae.first_stage_model.vae_shift.item() == pytest.approx(shift, rel=1e-3, abs=1e-6)


@pytest.mark.slow
@needs_comfy
def test_comfyui_loads_the_checkpoint_as_sdxl(sdxl):
    import_comfy()
    import comfy.model_base
    import comfy.sd
    import comfy.supported_models

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(sdxl.single_file))
    assert type(model.model.model_config) is comfy.supported_models.SDXL
    assert isinstance(model.model, comfy.model_base.SDXL)
    assert model.model.latent_format.scale_factor == fx.SDXL_SCALE_FACTOR
    assert vae.latent_channels == 4 and type(vae.first_stage_model).__name__ == "TAESD"
    assert type(clip.cond_stage_model).__name__ == "SDXLClipModel"
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a lighthouse at dusk"), return_pooled=True)
    assert cond.shape[-1] == 2048 and pooled.shape[-1] == 1280
    assert torch.isfinite(cond).all() and torch.isfinite(pooled).all()
