from __future__ import annotations

import pytest
import torch

from lune import latent, variants


def test_estimate_multiplier_is_bounded_and_per_sample():
    x = torch.cat([torch.randn(1, 4, 16, 16) * 20, torch.randn(1, 4, 16, 16) * 2, torch.randn(1, 4, 16, 16) * 100])
    f = latent.estimate_multiplier(x)
    assert f.shape == (3,)
    assert f[0].item() == pytest.approx(latent.AUTO_TARGET_STD / x[0].std(unbiased=False).item(), rel=1e-5)
    assert f[1].item() == 1.0  # never amplifies
    assert f[2].item() == latent.AUTO_MIN_FACTOR


def test_apply_multiplier_per_sample_and_dtype():
    x = torch.ones(2, 4, 2, 2, dtype=torch.float16)
    out = latent.apply_multiplier(x, torch.tensor([0.5, 0.25]))
    assert out.dtype == torch.float16 and out[0].unique().item() == 0.5 and out[1].unique().item() == 0.25


@pytest.mark.parametrize("path,expected", [
    ("checkpoints/sd15-flow-lune-flux/unet/diffusion_pytorch_model.safetensors", "lune-flux"),
    ("flux_t2_6_pose_t4_6_port_t1_4/checkpoint-00018765/unet/diffusion_pytorch_model.safetensors", "lune-flux"),
    ("sd15_flow_lune_e52_s52000.pt", "lune"),
    ("Lune_COMFYUI.safetensors", "lune"),
    ("sd15-flow-matching/unet.safetensors", "sol"),
    ("models/sol_v1.safetensors", "sol"),
])
def test_detect_variant_from_path(path, expected):
    v, reason = variants.detect_variant(path)
    assert v.name == expected and reason


def test_detect_variant_prefers_metadata_and_defaults_with_reason():
    v, reason = variants.detect_variant("x/model.safetensors", {"modelspec.title": "Lune Flux"})
    assert v.name == "lune-flux" and "metadata" in reason
    v, reason = variants.detect_variant("x/model.safetensors")
    assert v.name == variants.DEFAULT_VARIANT and "set variant explicitly" in reason


def test_variant_table_defaults():
    assert variants.get_variant("lune-flux").latent_multiplier == 1.0
    assert variants.get_variant("lune").latent_multiplier is None  # auto
    assert variants.get_variant("sol").prediction == variants.V_DISCRETE
    with pytest.raises(ValueError, match="choose one of"):
        variants.get_variant("sdxl")
