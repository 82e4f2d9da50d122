"""lune.unet_keys: diffusers <-> LDM key layout of SD1.5 UNets, checked against ComfyUI's own map."""
from __future__ import annotations

import pytest
import torch

from lune import unet_keys as uk
from lune.errors import LuneError, LuneFormatError, UnsupportedModelError
from testbed.comfy_path import comfy_available, import_comfy
from testbed.fixtures.sd15_files import UNET_SPECS, diffusers_unet_config, ldm_unet_shapes

needs_comfy = pytest.mark.skipif(not comfy_available(), reason="ComfyUI test install not found (COMFYUI_PATH)")


def meta_state_dict(shapes):
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.fixture(scope="module", params=["tiny", "full"])
def ldm_sd(request):
    return request.param, meta_state_dict(ldm_unet_shapes(UNET_SPECS[request.param]))


@needs_comfy
@pytest.mark.parametrize("size", ["full", "tiny"])
def test_mapping_equals_comfyui_unet_to_diffusers(size):
    """Every key of the UNet ComfyUI builds maps exactly as comfy.utils.unet_to_diffusers maps it."""
    import_comfy()
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = UNET_SPECS[size].comfy_unet_config()
    ldm_keys = set(UNetModel(**config, device="meta").state_dict())
    comfy_map = {d: l for d, l in comfy.utils.unet_to_diffusers(config).items() if l in ldm_keys}
    assert set(comfy_map.values()) == ldm_keys  # ComfyUI's map covers the whole UNet
    if size == "full":
        assert len(ldm_keys) == 686

    assert uk.diffusers_to_ldm_keys(comfy_map) == comfy_map
    assert uk.ldm_to_diffusers_keys(ldm_keys) == {l: d for d, l in comfy_map.items()}


def test_sd15_layout_read_from_keys():
    keys = ldm_unet_shapes(UNET_SPECS["full"])
    assert uk.layout_from_ldm_keys(keys) == uk.SD15_LAYOUT
    assert uk.layout_from_diffusers_keys(uk.ldm_to_diffusers_keys(keys).values()) == uk.SD15_LAYOUT
    tiny = uk.layout_from_ldm_keys(ldm_unet_shapes(UNET_SPECS["tiny"]))
    assert tiny == uk.UnetLayout(down=((1,),), up=((1, 1),), mid=None)


def test_module_pairs_bijective():
    for layout in (uk.SD15_LAYOUT, uk.UnetLayout(down=((1,),), up=((1, 1),), mid=None),
                   uk.UnetLayout(down=((0, 2), (3,)), up=((1, 0), (0, 0, 2)), mid=-1)):
        pairs = uk.module_pairs(layout)
        assert len({d for d, _ in pairs}) == len(pairs) == len({l for _, l in pairs})


def test_round_trip_keeps_tensor_objects(ldm_sd):
    size, sd = ldm_sd
    diffusers = uk.ldm_to_diffusers(sd)
    assert uk.is_diffusers_unet(diffusers) and not uk.is_ldm_unet(diffusers)
    back = uk.diffusers_to_ldm(diffusers, diffusers_unet_config(UNET_SPECS[size]))
    assert uk.is_ldm_unet(back) and not uk.is_diffusers_unet(back)
    assert list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)


def test_round_trip_exotic_layout():
    """Structure is read from keys: uneven attention, deeper transformers, lone mid resnet all survive."""
    layout = uk.UnetLayout(down=((0, 2), (3,)), up=((1, 0), (0, 0, 2)), mid=-1)
    ldm = {f"{l}.{p}": torch.empty(0, device="meta") for _, l in uk.module_pairs(layout) for p in ("weight", "bias")}
    assert uk.layout_from_ldm_keys(ldm) == layout
    diffusers = uk.ldm_to_diffusers(ldm)
    assert uk.layout_from_diffusers_keys(diffusers) == layout
    assert uk.diffusers_to_ldm(diffusers) == ldm


def test_known_keys_full_sd15():
    diffusers = uk.ldm_to_diffusers_keys(ldm_unet_shapes(UNET_SPECS["full"]))
    inv = {d: l for l, d in diffusers.items()}
    expected = {
        "conv_in.weight": "input_blocks.0.0.weight",
        "time_embedding.linear_2.bias": "time_embed.2.bias",
        "down_blocks.0.resnets.0.conv1.weight": "input_blocks.1.0.in_layers.2.weight",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight":
            "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.3.0.op.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight": "input_blocks.4.0.skip_connection.weight",
        "down_blocks.3.resnets.1.time_emb_proj.bias": "input_blocks.11.0.emb_layers.1.bias",
        "mid_block.attentions.0.proj_in.weight": "middle_block.1.proj_in.weight",
        "mid_block.resnets.1.norm2.weight": "middle_block.2.out_layers.0.weight",
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.1.conv.weight",
        "up_blocks.1.upsamplers.0.conv.bias": "output_blocks.5.2.conv.bias",
        "up_blocks.3.attentions.2.proj_out.bias": "output_blocks.11.1.proj_out.bias",
        "up_blocks.3.resnets.2.conv2.weight": "output_blocks.11.0.out_layers.3.weight",
        "conv_norm_out.weight": "out.0.weight",
        "conv_out.bias": "out.2.bias",
    }
    for d, l in expected.items():
        assert inv[d] == l


@pytest.mark.parametrize("keys", [
    ["foo.weight", "bar.bias"],
    ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "up_blocks.0.resnets.0.conv1.weight",
     "up_blocks.0.resnets.1.conv1.weight", "up_blocks.0.resnets.2.conv1.weight"],  # 3 up resnets for 1 down
    ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "down_blocks.1.resnets.0.conv1.weight",
     "up_blocks.0.resnets.0.conv1.weight", "up_blocks.0.resnets.1.conv1.weight"],  # 2 down levels, 1 up
    ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "up_blocks.0.resnets.0.conv1.weight",
     "up_blocks.0.resnets.1.conv1.weight", "mid_block.resnets.1.conv1.weight"],  # mid block without resnet 0
])
def test_garbage_keys_rejected(keys):
    sd = {k: torch.empty(0, device="meta") for k in keys}
    with pytest.raises(LuneFormatError):
        uk.diffusers_to_ldm(sd)


def test_unknown_key_is_named():
    sd = meta_state_dict(ldm_unet_shapes(UNET_SPECS["tiny"]))
    diffusers = uk.ldm_to_diffusers(sd)
    diffusers["down_blocks.0.resnets.0.conv1.lora_up.weight"] = torch.empty(0, device="meta")
    diffusers["down_blocks.0.resnets.0.conv1.scale"] = torch.empty(0, device="meta")
    with pytest.raises(LuneFormatError, match=r"2 of \d+ keys.*lora_up"):
        uk.diffusers_to_ldm(diffusers, source="x.safetensors")
    ldm = dict(sd, **{"input_blocks.1.1.transformer_blocks.0.attn3.to_q.weight": torch.empty(0, device="meta")})
    with pytest.raises(LuneFormatError, match="attn3"):
        uk.ldm_to_diffusers(ldm)


def test_gaps_rejected():
    keys = uk.ldm_to_diffusers_keys(ldm_unet_shapes(UNET_SPECS["full"])).values()
    with pytest.raises(LuneFormatError, match="gaps"):
        uk.diffusers_to_ldm_keys([k for k in keys if not k.startswith("down_blocks.1.")])


def test_sdxl_diffusers_is_unsupported_not_format():
    diffusers = uk.ldm_to_diffusers(meta_state_dict(ldm_unet_shapes(UNET_SPECS["tiny"])))
    diffusers["add_embedding.linear_1.weight"] = torch.empty(1280, 2816, device="meta")
    with pytest.raises(UnsupportedModelError, match="SDXL"):
        uk.diffusers_to_ldm(diffusers)


@pytest.mark.parametrize("change, field", [
    ({"block_out_channels": [320, 640]}, "block_out_channels"),
    ({"block_out_channels": [640]}, r"block_out_channels\[0\]"),
    ({"layers_per_block": 2}, "layers_per_block"),
    ({"down_block_types": ["DownBlock2D"]}, "down_block_types"),
    ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, "mid_block_type"),
    ({"cross_attention_dim": 1024}, "cross_attention_dim"),
    ({"in_channels": 9}, "in_channels"),
    ({"use_linear_projection": True}, "use_linear_projection"),
    ({"transformer_layers_per_block": 2}, "transformer_layers_per_block"),
    ({"_class_name": "UNet2DModel"}, "_class_name"),
])
def test_config_disagreement_raises(change, field):
    spec = UNET_SPECS["tiny"]
    sd = uk.ldm_to_diffusers(meta_state_dict(ldm_unet_shapes(spec)))
    config = dict(diffusers_unet_config(spec), **change)
    with pytest.raises(LuneFormatError, match=field) as info:
        uk.diffusers_to_ldm(sd, config, source="unet/diffusion_pytorch_model.safetensors")
    assert "config.json" in str(info.value) and "unet/diffusion_pytorch_model.safetensors" in str(info.value)


def test_full_config_agrees():
    spec = UNET_SPECS["full"]
    sd = uk.ldm_to_diffusers(meta_state_dict(ldm_unet_shapes(spec)))
    uk.check_diffusers_config(uk.SD15_LAYOUT, diffusers_unet_config(spec), sd)
    uk.check_diffusers_config(uk.SD15_LAYOUT, {}, sd)  # an empty config checks nothing


def test_predicates():
    ldm = ldm_unet_shapes(UNET_SPECS["tiny"])
    assert uk.is_ldm_unet(ldm) and uk.is_ldm_unet(list(ldm))
    assert uk.is_ldm_unet({"model.diffusion_model." + k for k in ldm}, prefix="model.diffusion_model.")
    assert not uk.is_ldm_unet({"model.diffusion_model." + k for k in ldm})
    assert not uk.is_diffusers_unet(["double_blocks.0.img_attn.qkv.weight"])
    assert issubclass(LuneFormatError, LuneError) and issubclass(LuneError, ValueError)
