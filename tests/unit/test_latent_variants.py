from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_lune.lune import latent, variants
from tests.numerics import RTOL_FORMULA, assert_close_rel


def _pooled_factor(x: torch.Tensor) -> float:
    """Independent float64 statement of the documented formula: clamp(target / √(mean_b Var(x_b)), 0.25, 1)."""
    per_image_var = [float(np.var(img.double().numpy())) for img in x]
    return min(1.0, max(0.25, (1 / 0.18215) / float(np.sqrt(np.mean(per_image_var)))))


def test_estimate_multiplier_is_one_bounded_factor_per_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 4, 16, 16, generator=g) * 20, torch.randn(1, 4, 16, 16, generator=g) * 9 + 3])
    f = latent.estimate_multiplier(x)
    assert f.ndim == 0, "one factor for the whole batch"
    assert_close_rel(f, _pooled_factor(x), RTOL_FORMULA, what="auto factor vs float64 formula")
    # each image alone would get a different factor; in the batch both get the same one
    alone = [float(latent.estimate_multiplier(x[i:i + 1])) for i in range(2)]
    assert abs(alone[0] - alone[1]) > 0.1
    out = latent.apply_multiplier(x, f)
    assert torch.equal(out, (x.float() * f).to(x.dtype))
    # bounds: never amplifies, never below the floor
    assert float(latent.estimate_multiplier(torch.randn(2, 4, 8, 8, generator=g) * 2)) == 1.0
    assert float(latent.estimate_multiplier(torch.randn(2, 4, 8, 8, generator=g) * 100)) == latent.AUTO_MIN_FACTOR


def test_estimate_multiplier_ignores_batch_order_and_mean_offsets():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=g) * 12
    shifted = x + torch.tensor([0.0, 5.0, -5.0]).view(3, 1, 1, 1)  # images of different mean colour
    assert float(latent.estimate_multiplier(x)) == float(latent.estimate_multiplier(x.flip(0)))
    assert_close_rel(latent.estimate_multiplier(shifted), latent.estimate_multiplier(x), RTOL_FORMULA,
                     what="factor with per-image mean offsets")


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
    assert v is variants.UNNAMED and "Pick the variant" in reason


def test_unnamed_file_is_flow_with_latents_unchanged():
    """The newest lune-flux finetune's folders do not say "flux": it must not get lune's darkening auto factor."""
    v, reason = variants.detect_variant("ffhq_low_t_portraits/checkpoint-00005106/unet/diffusion_pytorch_model"
                                        ".safetensors")
    assert v is variants.UNNAMED and v.prediction == variants.FLOW and v.latent_multiplier == 1.0
    assert variants.get_variant(v.name) is v and v.name not in variants.VARIANT_NAMES  # carried, never offered


@pytest.mark.parametrize("metadata", [
    {"prompt": '{"6": {"inputs": {"text": "sol de verano, a lune-flux style portrait"}}}',
     "workflow": '{"nodes": [{"widgets_values": ["sd15-flow-matching sol"]}]}'},  # ComfyUI CheckpointSave
    {"modelspec.description": "finetuned after comparing with sol and lune"},
    {"cfg.model_id": "AbstractPhil/sd15-flow-matching", "cfg.output_dir": "/content/sol/out"},
])
def test_detect_variant_ignores_free_form_metadata(metadata):
    v, _ = variants.detect_variant("portraits/model.safetensors", metadata)
    assert v is variants.UNNAMED


def test_detect_variant_reads_curated_metadata_keys():
    assert variants.detect_variant("a.safetensors", {"lune.variant": "sol"})[0].name == "sol"
    assert variants.detect_variant("lune-flux/a.safetensors", {"lune.variant": "lune"})[0].name == "lune"
    assert variants.detect_variant("a.safetensors", {"lune.variant": "future-variant"})[0] is variants.UNNAMED
    assert variants.detect_variant("a.pt", {"cfg.run_name": "sd15_flow_lune_flux_ft"})[0].name == "lune-flux"
    assert variants.detect_variant("a.safetensors", {"modelspec.title": "Sol v2"})[0].name == "sol"


def test_detect_variant_refuses_absolute_paths():
    """Folders above the models folder (/home/sol/ComfyUI/models/…) must never take part."""
    for path in ("/home/sol/ComfyUI/models/checkpoints/lune.safetensors", "C:\\sol\\models\\lune.safetensors"):
        with pytest.raises(ValueError, match="relative to the models folder"):
            variants.detect_variant(path)


def test_variant_table_defaults():
    assert variants.get_variant("lune-flux").latent_multiplier == 1.0
    assert variants.get_variant("lune").latent_multiplier is None  # auto
    assert variants.get_variant("sol").prediction == variants.V_DISCRETE
    with pytest.raises(ValueError, match="choose one of"):
        variants.get_variant("sdxl")
