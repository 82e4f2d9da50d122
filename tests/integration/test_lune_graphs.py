"""In the real ComfyUI, every checkpoint format runs the stock txt2img graph and writes a PNG."""
from __future__ import annotations

import pytest
from PIL import Image

from testbed import graphs

pytestmark = pytest.mark.comfy

FORMATS = ("single_file", "diffusers", "training_state", "bare_diffusers")
SAMPLERS = (("euler", "simple"), ("lune_euler", "lune_flow"))


@pytest.mark.parametrize("sampler,scheduler", SAMPLERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_txt2img_writes_png_for_every_format(comfy, tiny_models, fmt, sampler, scheduler):
    companion = "(from model file)" if fmt == "single_file" else tiny_models["single_file"]
    g = graphs.txt2img(tiny_models[fmt], variant="lune-flux", clip_vae_from=companion, sampler=sampler,
                       scheduler=scheduler, prefix=f"fmt_{fmt}_{sampler}")
    result = comfy.run(g)
    assert result.ok, result.error_message()
    files = comfy.output_files(result)
    assert len(files) == 1 and files[0].is_file()
    with Image.open(files[0]) as im:
        assert im.size == (64, 64)


def test_adapter_with_sampler_custom_writes_png(comfy, tiny_models):
    g = graphs.with_adapter(graphs.txt2img(tiny_models["single_file"], prefix="adapter"))
    result = comfy.run(g)
    assert result.ok, result.error_message()
    assert comfy.output_files(result)[0].is_file()


def test_auto_latent_multiplier_on_lune_variant(comfy, tiny_models):
    g = graphs.txt2img(tiny_models["single_file"], variant="lune", latent_mode="variant default", prefix="auto")
    result = comfy.run(g)
    assert result.ok, result.error_message()
