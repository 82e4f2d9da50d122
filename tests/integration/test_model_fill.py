"""The low-memory model builders (nodes/model_fill.py) give exactly what ComfyUI's stock builders give.

Every format is read twice with the pack's reader (both builders take tensors out of the dict they are given);
one copy goes through ``comfy.sd``'s stock call, the other through the pack's drop-in. The UNets must agree bit
for bit, in dtype, in model/config classes and devices; CLIP and VAE must agree too.
The diffusers-key path of ``load_unet`` only runs on full-size weights (ComfyUI recognises diffusers UNets from a
list of real layouts), hence the slow test at the end.
"""
from __future__ import annotations

import hashlib
import sys

import pytest
import torch

from lune.formats import read_checkpoint

pytestmark = pytest.mark.comfy

FORMATS = ("single_file", "diffusers", "training_state", "bare_diffusers")


@pytest.fixture(scope="module")
def model_fill(comfy):
    return sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"].__module__].model_fill


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _fingerprint(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: (v.dtype, tuple(v.shape), v.device.type, _digest(v)) for k, v in module.state_dict().items()}


def assert_same_patcher(mine, stock) -> None:
    assert type(mine) is type(stock)
    assert type(mine.model) is type(stock.model)
    assert type(mine.model.model_config) is type(stock.model.model_config)
    assert mine.model.model_config.unet_config == stock.model.model_config.unet_config
    assert mine.model.model_config.manual_cast_dtype == stock.model.model_config.manual_cast_dtype
    assert mine.model.get_dtype() == stock.model.get_dtype()
    assert mine.model.model_type == stock.model.model_type
    assert (mine.load_device, mine.offload_device) == (stock.load_device, stock.offload_device)
    assert type(mine.model.diffusion_model) is type(stock.model.diffusion_model)
    ours, theirs = _fingerprint(mine.model.diffusion_model), _fingerprint(stock.model.diffusion_model)
    assert ours.keys() == theirs.keys()
    differing = [k for k in theirs if ours[k] != theirs[k]]
    print(f"{len(theirs)} UNet tensors compared, {len(differing)} differ")
    assert not differing, differing[:5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_model_as_stock(comfy, model_fill, tiny_sd15, fmt):
    import comfy.sd

    path = {"single_file": tiny_sd15.single_file, "diffusers": tiny_sd15.diffusers_dir,
            "training_state": tiny_sd15.training_state, "bare_diffusers": tiny_sd15.bare_unet}[fmt]
    a, b = read_checkpoint(str(path)), read_checkpoint(str(path))
    if fmt == "single_file":
        stock = comfy.sd.load_state_dict_guess_config(a.full_state_dict, output_vae=True, output_clip=True,
                                                      metadata=a.metadata)
        mine = model_fill.load_checkpoint(b.full_state_dict, metadata=b.metadata)
        assert_same_patcher(mine[0], stock[0])
        assert _fingerprint(mine[2].first_stage_model) == _fingerprint(stock[2].first_stage_model)
        # ComfyUI leaves these two uninitialised when a checkpoint lacks them (SD1.5 files do): not comparable
        uninitialised = (".logit_scale", ".transformer.text_projection.weight")
        clip_mine, clip_stock = (_fingerprint(m[1].cond_stage_model) for m in (mine, stock))
        assert clip_mine.keys() == clip_stock.keys()
        assert all(clip_mine[k] == clip_stock[k] for k in clip_stock if not k.endswith(uninitialised))
    else:
        stock = comfy.sd.load_diffusion_model_state_dict(a.unet, metadata=a.metadata)
        mine = model_fill.load_unet(b.unet, metadata=b.metadata)
        assert_same_patcher(mine, stock)


def test_prefixed_unet_and_dtype_override(comfy, model_fill, tiny_sd15):
    """A checkpoint-style prefix is stripped and a dtype override is honoured, as by the stock call."""
    import comfy.sd

    def prefixed():
        return {"model.diffusion_model." + k: v for k, v in read_checkpoint(str(tiny_sd15.training_state)).unet.items()}

    options = {"dtype": torch.float16}
    stock = comfy.sd.load_diffusion_model_state_dict(prefixed(), model_options=options)
    mine = model_fill.load_unet(prefixed(), model_options=options)
    assert mine.model.get_dtype() == torch.float16
    assert_same_patcher(mine, stock)


def test_unrecognised_state_dict_gives_none_like_stock(comfy, model_fill):
    import comfy.sd

    sd = {"foo.weight": torch.zeros(3, 3)}
    assert comfy.sd.load_diffusion_model_state_dict(dict(sd)) is None
    assert model_fill.load_unet(dict(sd)) is None


def test_quantized_files_go_to_the_stock_call(comfy, model_fill, caplog):
    """Scaled-fp8 files are left to ComfyUI's own path (and the choice is logged)."""
    sd = {"foo.weight": torch.zeros(3, 3), "scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    with caplog.at_level("INFO", logger="lune"):
        assert model_fill.load_unet(sd) is None
    assert any("standard UNet load" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_full_size_diffusers_keys_same_as_stock(comfy, model_fill):
    """Diffusers-key UNet (full size, as ComfyUI's detection requires) through ComfyUI's own key conversion.

    Heavy (≈ 5 GB RAM): run under the shared lock. Fingerprints of the stock model are kept, not the model.
    """
    import comfy.sd

    from lune.safe_read import read_safetensors
    from testbed.fixtures.sd15_files import build_sd15_fixtures

    path = str(build_sd15_fixtures(None, size="full", seed=0).bare_unet)
    sd, metadata = read_safetensors(path)
    assert "conv_in.weight" in sd, "the bare fixture must hold diffusers keys"
    stock = comfy.sd.load_diffusion_model_state_dict(sd, metadata=metadata)
    reference = _fingerprint(stock.model.diffusion_model)
    facts = (type(stock.model), stock.model.get_dtype(), stock.model.model_config.unet_config)
    del stock, sd
    sd, metadata = read_safetensors(path)
    mine = model_fill.load_unet(sd, metadata=metadata)
    assert (type(mine.model), mine.model.get_dtype(), mine.model.model_config.unet_config) == facts
    ours = _fingerprint(mine.model.diffusion_model)
    differing = [k for k in reference if ours.get(k) != reference[k]]
    print(f"{len(reference)} UNet tensors compared, {len(differing)} differ")
    assert ours.keys() == reference.keys() and not differing, differing[:5]


def test_quantization_metadata_is_left_for_the_stock_call(comfy, model_fill):
    """Per-layer quantized files go to the stock call with their metadata intact (ComfyUI pops that entry)."""
    import json

    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {"a": {"format": "x"}}})}
    assert model_fill._stock_only_reason({}, metadata, {}) == "per-layer quantized weights"
    assert "_quantization_metadata" in metadata
    assert model_fill._stock_only_reason({}, {"modelspec.title": "x"}, {}) is None
    assert model_fill._stock_only_reason({}, None, {"custom_operations": object()}) is not None
