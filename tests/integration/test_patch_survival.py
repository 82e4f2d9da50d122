"""A Lune MODEL behaves like a stock MODEL next to today's neighbours: its variant (timestep multiplier, output
sign) survives ``type(old)(config)`` rebuilds (ComfyUI 0.28's ModelNoiseScale), deep copies + ``set_parameters``
(RES4LYF); the flow patch carries ``noise_scale`` over as stock ModelSamplingSD3 does; and where ComfyUI rebuilds a
model from its file (0.28's reload factory: Dynamic VRAM, multi-GPU clones) the Lune file is reloaded."""
from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.comfy

FROM_FILE = "(from model file)"


def comfyui_version() -> tuple[int, ...]:
    import comfyui_version

    return tuple(int(p) for p in comfyui_version.__version__.split(".")[:3])


HAS_NOISE_SCALE_AND_FACTORIES = comfyui_version() >= (0, 4)
VARIANTS = [("lune", 1000.0, 1.0), ("sd-flow-alpha", 999.0, 1.0), ("instaflow", 1000.0, -1.0)]


@pytest.fixture(scope="module")
def nodes(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def loaded(nodes, tiny_models):
    loader = nodes["LuneModelLoader"]()
    return {v: loader.load(tiny_models["single_file"], v, 2.0, FROM_FILE)[0] for v, _, _ in VARIANTS}


def _sampling(model):
    return model.get_model_object("model_sampling")


def _denoise_probe(ms) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    sigma = torch.tensor([0.9, 0.4])
    x, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    return torch.cat([ms.calculate_denoised(sigma, out, x).flatten(), ms.timestep(sigma)])


@pytest.mark.parametrize("variant,multiplier,sign", VARIANTS)
def test_variant_survives_type_rebuild(loaded, variant, multiplier, sign):
    """What ComfyUI's ModelNoiseScale does: ``type(old)(model_config)`` then ``set_parameters(shift, multiplier)``."""
    model = loaded[variant]
    old = _sampling(model)
    rebuilt = type(old)(model.model.model_config)
    rebuilt.set_parameters(shift=old.shift, multiplier=old.multiplier)
    assert (rebuilt.lune_variant, rebuilt.multiplier, rebuilt.output_sign) == (variant, multiplier, sign)
    assert torch.equal(_denoise_probe(rebuilt), _denoise_probe(old))
    bare = type(old)(model.model.model_config)  # no set_parameters at all: still the variant's multiplier
    assert bare.multiplier == multiplier and bare.output_sign == sign


@pytest.mark.parametrize("variant,multiplier,sign", VARIANTS)
def test_variant_survives_deepcopy_and_set_parameters(loaded, variant, multiplier, sign):
    """RES4LYF deep-copies model_sampling and calls ``set_parameters(shift=…)`` on the copy."""
    old = _sampling(loaded[variant])
    clone = copy.deepcopy(old)
    clone.set_parameters(shift=3.0)
    assert (clone.lune_variant, clone.multiplier, clone.output_sign, clone.shift) == (variant, multiplier, sign, 3.0)
    assert old.shift == 2.0, "the original object must not change"


def test_model_noise_scale_node_keeps_the_variant_and_shift_keeps_the_noise_scale(comfy, nodes, loaded):
    """ComfyUI 0.28 ModelNoiseScale → Lune Flow Shift: the variant survives the first, the noise scale the second."""
    if not HAS_NOISE_SCALE_AND_FACTORIES:  # 0.3.75: neither the node nor noise scales exist
        assert "ModelNoiseScale" not in nodes and not hasattr(_sampling(loaded["instaflow"]), "noise_scale")
        return
    scaled = nodes["ModelNoiseScale"]().patch(loaded["instaflow"], 2.0)[0]
    ms = _sampling(scaled)
    assert (ms.lune_variant, ms.output_sign, ms.noise_scale) == ("instaflow", -1.0, 2.0)
    shifted = nodes["LuneShift"]().patch(scaled, 3.0)[0]
    ms = _sampling(shifted)
    assert (ms.lune_variant, ms.output_sign, ms.shift, ms.noise_scale) == ("instaflow", -1.0, 3.0, 2.0)
    g = torch.Generator().manual_seed(0)
    noise, latent = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    sigma = torch.tensor([0.5])
    assert torch.allclose(ms.noise_scaling(sigma, noise, latent), 0.5 * 2.0 * noise + 0.5 * latent)


def test_stock_sd3_then_lune_shift_chain(comfy, nodes, tiny_models):
    """Stock checkpoint → (ModelNoiseScale) → ModelSamplingSD3 → Lune Flow Shift: the pack's patch replaces the stock
    one and keeps whatever noise scale the chain set (1.0 where ComfyUI has no noise scales)."""
    model = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])[0]
    expected_scale = 1.0
    if "ModelNoiseScale" in nodes:
        model = nodes["ModelNoiseScale"]().patch(model, 1.5)[0]
        expected_scale = 1.5
    model = nodes["ModelSamplingSD3"]().patch(model, 3.0)[0]
    assert getattr(_sampling(model), "noise_scale", 1.0) == expected_scale
    shifted = nodes["LuneShift"]().patch(model, 2.5)[0]
    ms = _sampling(shifted)
    assert type(ms).__name__ == "LuneFlowSampling" and ms.shift == 2.5 and ms.multiplier == 1000.0
    assert getattr(ms, "noise_scale", 1.0) == expected_scale
    assert list(shifted.object_patches).count("model_sampling") == 1


def _unet_state(patcher) -> dict:
    return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["single_file", "diffusers", "training_state"])
def test_reload_factory_rebuilds_the_same_model(comfy, nodes, tiny_models, fmt):
    """0.28: the loader registers ``cached_patcher_init`` like the stock loaders; ComfyUI's multi-GPU deep clone
    (which calls it) gives the same weights and keeps the Lune patch. 0.3.75 has no such hook."""
    import comfy.model_patcher

    model = nodes["LuneModelLoader"]().load(tiny_models[fmt], "lune-flux", 2.0, FROM_FILE)[0]
    if not HAS_NOISE_SCALE_AND_FACTORIES:  # 0.3.75: no reload factories, and the pack registers none
        assert getattr(model, "cached_patcher_init", None) is None
        return
    assert isinstance(model, comfy.model_patcher.CoreModelPatcher)
    factory, args = model.cached_patcher_init[:2]
    rebuilt = factory(*args, disable_dynamic=True)
    assert isinstance(rebuilt, comfy.model_patcher.ModelPatcher)
    before = _unet_state(model)
    after = _unet_state(rebuilt)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    clone = model.deepclone_multigpu(new_load_device=torch.device("cpu"))
    assert clone.model is not model.model
    ms = _sampling(clone)
    assert (ms.lune_variant, ms.shift) == ("lune-flux", 2.0)
    cloned = _unet_state(clone)
    assert all(torch.equal(before[k], cloned[k]) for k in before)
