"""The pack inside a real ComfyUI HTTP server: registration, a bad prompt, and the next prompt still served."""
from __future__ import annotations

import pytest

from testbed.fixtures import sd15_files
from testbed import graphs
from testbed.env import place_model
from testbed.server import execution_error

pytestmark = pytest.mark.comfy


def test_nodes_and_stock_list_entries_are_served(comfy_server):
    info = comfy_server.get("/object_info")
    for node in ("LuneModelLoader", "LuneShift", "LuneLatentMultiply", "LuneSamplerAdapter"):
        assert node in info and info[node]["category"].startswith("Lune")
    ks = info["KSampler"]["input"]["required"]
    assert "lune_euler" in ks["sampler_name"][0] and "lune_flow" in ks["scheduler"][0]
    shift = info["LuneShift"]["input"]["required"]["shift"][1]
    assert shift["default"] == 2.0 and "2.0–2.5" in shift["tooltip"]
    assert info["LuneModelLoader"]["display_name"] == "Load Lune Model"


def test_bad_file_errors_then_next_prompt_succeeds(comfy_server, comfy_base, tiny_models, tiny_sd15, tmp_path):
    bad = tmp_path / "half.safetensors"
    sd15_files.write_truncated_safetensors(tiny_sd15.single_file, bad, keep_bytes=1000)
    name = place_model(comfy_base, "checkpoints", bad, "http_truncated.safetensors")
    entry = comfy_server.run(graphs.txt2img(name, prefix="http_bad"))
    err = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and err is not None
    assert err["node_type"] == "LuneModelLoader" and "truncated" in err["exception_message"]
    good = comfy_server.run(graphs.txt2img(tiny_models["training_state"], clip_vae_from=tiny_models["single_file"],
                                           sampler="lune_euler", scheduler="lune_flow", prefix="http_good"))
    assert good["status"]["status_str"] == "success", execution_error(good)
    images = [i for out in good["outputs"].values() for i in out.get("images", [])]
    assert (comfy_base / "output" / images[0]["filename"]).is_file()


def test_out_of_range_shift_is_rejected_at_validation(comfy_server, tiny_models):
    entry = comfy_server.run(graphs.txt2img(tiny_models["single_file"], shift=-1.0))  # 0 = the variant's shift
    assert "rejected" in entry
    assert "shift" in str(entry["rejected"])
