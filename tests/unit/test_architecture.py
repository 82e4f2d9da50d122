"""lune.architecture: layout detection (LDM vs diffusers names), the SD1.5 signature and the strict completeness
check, on meta tensors with the real key layouts. Diffusers names come from ComfyUI's own map (the fixture
builder's ``diffusers_names``), never from pack code."""
from __future__ import annotations

import logging

import pytest
import torch

from comfyui_lune.lune.architecture import (DIFFUSERS, LDM, SD15_UNET_TENSORS, check_complete_unet, check_sd15_unet,
                                            unet_layout)
from comfyui_lune.lune.errors import LuneError, LuneFormatError, UnsupportedModelError
from testbed.comfy_path import comfy_available
from testbed.fixtures import sd15_files as fx

needs_comfy = pytest.mark.skipif(not comfy_available(), reason="ComfyUI test install not found (COMFYUI_PATH)")
SOURCE = "models/diffusion_models/x.safetensors"


def meta(shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def ldm_unet(size: str = "full") -> dict[str, torch.Tensor]:
    return meta(fx.ldm_unet_shapes(fx.UNET_ARCHS[size]))


def diffusers_unet(spec: fx.UnetSpec = fx.UNET_ARCHS["full"]) -> dict[str, torch.Tensor]:
    names = fx.diffusers_names(spec)
    return {names[k]: v for k, v in meta(fx.ldm_unet_shapes(spec)).items()}


def accept(sd) -> str:
    layout = check_sd15_unet(sd, SOURCE)
    check_complete_unet(sd, layout, SOURCE)
    return layout


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_ldm_unets_are_accepted(size):
    sd = ldm_unet(size)
    assert unet_layout(sd) == LDM and accept(sd) == LDM
    assert len(sd) == {"full": SD15_UNET_TENSORS, "tiny": 122}[size]


@needs_comfy
def test_full_diffusers_unet_is_accepted():
    sd = diffusers_unet()
    assert unet_layout(sd) == DIFFUSERS and accept(sd) == DIFFUSERS and len(sd) == 686


def test_no_unet_is_none():
    assert unet_layout(["img_in.weight", "double_blocks.0.img_attn.qkv.weight"]) is None
    assert unet_layout(["input_blocks.0.0.weight"]) is None  # one key is not a UNet
    with pytest.raises(UnsupportedModelError, match="no SD1.5 UNet input convolution"):
        check_sd15_unet(meta({"foo.weight": (1,)}), SOURCE)


LDM_DROPS = ["input_blocks.1.0.out_layers.3.bias", "input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight",
             "input_blocks.1.1.proj_out.bias", "time_embed.2.bias", "out.0.weight"]


@pytest.mark.parametrize("size", ["full", "tiny"])
@pytest.mark.parametrize("dropped", LDM_DROPS)
def test_missing_ldm_tensor_is_refused(size, dropped):
    sd = ldm_unet(size)
    del sd[dropped]
    with pytest.raises(LuneFormatError) as info:
        accept(sd)
    message = str(info.value)
    assert SOURCE in message and "incomplete" in message and dropped in message and "download it again" in message


@pytest.mark.parametrize("dropped", ["input_blocks.3.0.op.bias", "output_blocks.2.1.conv.weight",
                                     "input_blocks.4.0.skip_connection.bias", "middle_block.2.emb_layers.1.bias"])
def test_missing_ldm_tensor_of_full_unet_is_refused(dropped):
    sd = ldm_unet("full")
    del sd[dropped]
    with pytest.raises(LuneFormatError, match="incomplete"):
        accept(sd)


@needs_comfy
@pytest.mark.parametrize("dropped", ["down_blocks.0.resnets.0.conv2.bias", "up_blocks.1.upsamplers.0.conv.bias",
                                     "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight",
                                     "conv_norm_out.bias", "down_blocks.1.resnets.0.conv_shortcut.weight"])
def test_missing_diffusers_tensor_is_refused(dropped):
    sd = diffusers_unet()
    del sd[dropped]
    with pytest.raises(LuneFormatError, match="incomplete") as info:
        accept(sd)
    assert dropped in str(info.value)


@needs_comfy
def test_partial_diffusers_unet_is_refused_by_count():
    """A whole module gone leaves no trace in the module check: the 686-tensor count catches it."""
    sd = {k: v for k, v in diffusers_unet().items() if not k.startswith("down_blocks.3.resnets.1.")}
    with pytest.raises(LuneFormatError, match=f"holds 676 diffusers-named UNet tensors.*{SD15_UNET_TENSORS}"):
        accept(sd)


@needs_comfy
def test_unknown_diffusers_tensor_is_refused():
    sd = diffusers_unet()
    sd["down_blocks.0.resnets.0.conv1.lora_up.weight"] = torch.empty(4, 4, device="meta")
    with pytest.raises(LuneFormatError, match="lora_up") as info:
        accept(sd)
    assert SOURCE in str(info.value) and "not part of an SD1.5 UNet" in str(info.value)


def test_unknown_ldm_tensor_is_only_logged(caplog):
    sd = ldm_unet("tiny")
    sd["input_blocks.1.0.in_layers.2.scale_weight"] = torch.empty(1, device="meta")
    with caplog.at_level(logging.WARNING, logger="lune"):
        assert accept(sd) == LDM
    assert "scale_weight" in caplog.text


@pytest.mark.parametrize("kind, needle", [("sdxl", "SDXL"), ("sd2", "SD2"), ("inpaint_sd15", "inpainting")])
@pytest.mark.parametrize("names", ["ldm", pytest.param("diffusers", marks=needs_comfy)])
def test_foreign_unets_are_named(kind, needle, names):
    spec = fx.FOREIGN_ARCHS[kind]
    sd = diffusers_unet(spec) if names == "diffusers" else meta(fx.ldm_unet_shapes(spec))
    with pytest.raises(UnsupportedModelError, match=needle) as info:
        check_sd15_unet(sd, SOURCE)
    assert SOURCE in str(info.value) and "stock" in str(info.value)


def test_lyra_weights_in_the_unet_slot_are_named():
    sd = meta({"fusion.modality_projections.clip.weight": (8, 8), "conv_in.weight": (320, 4, 3, 3)})
    with pytest.raises(UnsupportedModelError, match="Load Lyra"):
        check_sd15_unet(sd, SOURCE)


def test_error_root():
    assert issubclass(LuneFormatError, LuneError) and issubclass(UnsupportedModelError, LuneError)
    assert issubclass(LuneError, ValueError)
