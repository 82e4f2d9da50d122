"""Full-size SD1.5 in all four formats through Load Lune Model: bitwise the same UNet every time.

The UNet-only files of the full fixture carry diffusers names made from ComfyUI's own map (the fixture builder),
and the pack hands them to ``comfy.sd.load_diffusion_model_state_dict`` unrenamed, so this checks the real
diffusers path end to end: no pack code names or renames a key. About 9.5 GB RSS at peak, 1.5 min: run it
under the shared lock, e.g. ``flock /tmp/lune-heavy.lock python -m pytest -q -s
tests/integration/test_lune_formats_full.py``.
"""
from __future__ import annotations

import gc

import pytest
import torch

from testbed.env import place_model
from testbed.fixtures import sd15_files as fx

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

FORMATS = ("single_file", "diffusers", "training_state", "bare_diffusers")


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8),
                                                                     b.contiguous().view(torch.uint8))


@pytest.fixture(scope="module")
def full(comfy, comfy_base):
    f = fx.build_sd15_fixtures(None, "full")
    names = {
        "single_file": place_model(comfy_base, "checkpoints", f.single_file, "lune_full_single.safetensors"),
        "diffusers": place_model(comfy_base, "diffusion_models", f.diffusers_dir, "lune_full_diffusers")
        + "/unet/diffusion_pytorch_model.safetensors",
        "training_state": place_model(comfy_base, "diffusion_models", f.training_state, "lune_full_train.pt"),
        "bare_diffusers": place_model(comfy_base, "diffusion_models", f.bare_unet, "lune_full_bare.safetensors"),
    }
    return f, names


@pytest.fixture(scope="module")
def reference():
    return fx.reference_unet("full")


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_size_format_loads_the_reference_unet(comfy, full, reference, fmt):
    f, names = full
    assert f.unet_only_names == "diffusers"
    model = comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]().load(names[fmt], "lune-flux", 2.0,
                                                                      "(from model file)")[0]
    assert type(model.model.model_config).__name__ == "SD15"
    loaded = model.model.diffusion_model.state_dict()
    assert loaded.keys() == reference.keys()
    differing = [k for k, v in reference.items() if not bitwise_equal(loaded[k].to(f.dtype), v)]
    print(f"\n[full formats] {fmt}: {len(reference)} tensors, loaded as {next(iter(loaded.values())).dtype}, "
          f"{len(differing)} differ from the reference")
    assert not differing, differing[:3]
    del model, loaded
    gc.collect()
