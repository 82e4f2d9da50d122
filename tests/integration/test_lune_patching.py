"""The shift patch replaces, never stacks, never leaks; the latent correction is applied exactly once."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def nodes(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def lune(nodes, tiny_models):
    return nodes["LuneModelLoader"]().load(tiny_models["single_file"], "lune", 2.0, "(from model file)")[0]


def test_shift_replaces_previous_patch_and_keeps_original(nodes, lune):
    a = nodes["LuneShift"]().patch(lune, 3.0)[0]
    b = nodes["LuneShift"]().patch(a, 2.5)[0]
    assert lune.get_model_object("model_sampling").shift == 2.0
    assert a.get_model_object("model_sampling").shift == 3.0
    assert b.get_model_object("model_sampling").shift == 2.5
    assert b.get_model_object("model_sampling").lune_variant == "lune"
    assert list(b.object_patches).count("model_sampling") == 1


def test_shift_on_stock_sd15_checkpoint(comfy, nodes, tiny_models):
    import comfy.model_sampling as ms

    stock = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])[0]
    patched = nodes["LuneShift"]().patch(stock, 2.0)[0]
    assert isinstance(stock.get_model_object("model_sampling"), ms.EPS), "the input MODEL must stay untouched"
    assert isinstance(patched.get_model_object("model_sampling"), ms.CONST)


def test_latent_multiply_refuses_second_application(nodes, lune):
    node = nodes["LuneLatentMultiply"]()
    latent = {"samples": torch.randn(2, 4, 8, 8) * 10}
    once, factor = node.apply(latent, "fixed", 0.5, None)
    assert torch.allclose(once["samples"], latent["samples"] * 0.5) and factor == 0.5
    with pytest.raises(ValueError, match="already corrected"):
        node.apply(once, "fixed", 0.5, None)
    # a *new* latent derived from it (e.g. a second sampling pass) may be corrected again
    again = dict(once, samples=once["samples"].clone())
    node.apply(again, "fixed", 0.5, None)


def test_latent_multiply_variant_defaults(nodes, lune, tiny_models):
    node = nodes["LuneLatentMultiply"]()
    flux = nodes["LuneModelLoader"]().load(tiny_models["single_file"], "lune-flux", 2.0, "(from model file)")[0]
    latent = {"samples": torch.randn(1, 4, 8, 8) * 20}
    out, factor = node.apply(latent, "variant default", 1.0, flux)
    assert factor == 1.0 and torch.equal(out["samples"], latent["samples"])
    out, factor = node.apply(latent, "variant default", 1.0, lune)
    expected = min(1.0, max(0.25, (1 / 0.18215) / latent["samples"].std(unbiased=False).item()))
    assert factor == pytest.approx(expected, rel=1e-5) and factor < 1.0
    with pytest.raises(ValueError, match="needs the model input"):
        node.apply(latent, "variant default", 1.0, None)
