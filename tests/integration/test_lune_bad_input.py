"""Bad input to the Lune nodes gives an error naming the problem and the fix; ComfyUI serves the next prompt."""
from __future__ import annotations

import pytest

from testbed.fixtures import sd15_files
from testbed import graphs
from testbed.env import place_model

pytestmark = pytest.mark.comfy


def _expect_error_then_recover(comfy, tiny_models, graph, *needles):
    result = comfy.run(graph)
    assert not result.ok, "the bad prompt must fail"
    message = result.error_message()
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in: {message}"
    good = comfy.run(graphs.txt2img(tiny_models["single_file"], prefix="recover"))
    assert good.ok, good.error_message()
    return message


BAD_UNETS = {
    "sdxl": (sd15_files.write_sdxl_like_unet, ("SDXL", "stock")),
    "sd2": (sd15_files.write_sd2_like_unet, ("SD2", "stock")),
    "flux": (sd15_files.write_flux_like, ("Flux",)),
    "inpaint": (sd15_files.write_inpaint_sd15_like, ("inpainting", "9 input channels")),
}


@pytest.mark.parametrize("kind", sorted(BAD_UNETS))
def test_foreign_architecture_is_named(comfy, comfy_base, tiny_models, tmp_path, kind):
    writer, needles = BAD_UNETS[kind]
    path = tmp_path / f"{kind}_model.safetensors"
    writer(path)
    name = place_model(comfy_base, "diffusion_models", path)
    g = graphs.txt2img(name, clip_vae_from=tiny_models["single_file"])
    _expect_error_then_recover(comfy, tiny_models, g, *needles)


def test_truncated_safetensors(comfy, comfy_base, tiny_models, tiny_sd15, tmp_path):
    path = tmp_path / "truncated.safetensors"
    sd15_files.write_truncated_safetensors(tiny_sd15.single_file, path,
                                           keep_bytes=path_size(tiny_sd15.single_file) // 2)
    name = place_model(comfy_base, "checkpoints", path)
    _expect_error_then_recover(comfy, tiny_models, graphs.txt2img(name), "truncated", "download it again")


def test_zero_byte_file(comfy, comfy_base, tiny_models, tmp_path):
    path = tmp_path / "empty.safetensors"
    sd15_files.write_zero_byte(path)
    name = place_model(comfy_base, "checkpoints", path)
    _expect_error_then_recover(comfy, tiny_models, graphs.txt2img(name), "empty")


def test_pickle_that_would_run_code_is_refused(comfy, comfy_base, tiny_models, tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    sd15_files.write_malicious_pt(path, marker)
    name = place_model(comfy_base, "diffusion_models", path)
    g = graphs.txt2img(name, clip_vae_from=tiny_models["single_file"])
    _expect_error_then_recover(comfy, tiny_models, g, "refused", "nothing from the file was executed")
    assert not marker.exists(), "the pickle payload ran"


def test_ckpt_named_safetensors_still_loads(comfy, comfy_base, tiny_models, tmp_path):
    path = tmp_path / "really_a_ckpt.safetensors"
    sd15_files.write_ckpt_as_safetensors(path)
    name = place_model(comfy_base, "diffusion_models", path)
    result = comfy.run(graphs.txt2img(name, clip_vae_from=tiny_models["single_file"]))
    assert result.ok, result.error_message()
    assert comfy.output_files(result)[0].is_file()


def test_scheduler_and_adapter_refuse_unpatched_model(comfy, tiny_models):
    nodes = comfy.nodes
    ckpt = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])
    stock_model, clip = ckpt[0], ckpt[1]
    with pytest.raises(ValueError, match="Lune Flow Shift"):
        nodes.NODE_CLASS_MAPPINGS["LuneSamplerAdapter"]().build(stock_model, 4, 1.0)
    pos = nodes.CLIPTextEncode().encode(clip, "x")[0]
    with pytest.raises(ValueError, match="Lune Flow Shift"):
        nodes.common_ksampler(stock_model, 0, 2, 1.0, "euler", "lune_flow", pos, pos,
                              {"samples": __import__("torch").zeros(1, 4, 8, 8)})


def test_shift_refuses_sol_and_bad_values(comfy, tiny_models):
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    sol = nodes["LuneModelLoader"]().load(tiny_models["single_file"], "sol", 2.0, "(from model file)")[0]
    with pytest.raises(ValueError, match="Sol"):
        nodes["LuneShift"]().patch(sol, 2.0)
    flow = nodes["LuneModelLoader"]().load(tiny_models["single_file"], "lune", 2.0, "(from model file)")[0]
    with pytest.raises(ValueError, match="shift must be > 0"):
        nodes["LuneShift"]().patch(flow, 0.0)


def path_size(p) -> int:
    import os

    return os.path.getsize(p)
