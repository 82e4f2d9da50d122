"""Lune Merge Models in a real ComfyUI (in-process): merge → sample, and every bad input refused cleanly.

The node's file equals the library's merge of the same inputs bit for bit; refused prompts leave
models/checkpoints exactly as it was (no output, no temporary), and the next prompt runs.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfyui_lune.lune.merge import RECIPE_METADATA_KEY, MergeParams, merge_models
from testbed import graphs
from testbed.env import place_model
from testbed.fixtures import sd15_files

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def merge_inputs(comfy, comfy_base, tiny_models):
    """Base = the session's tiny single file (seed 0); two more tiny single files with seeds 1 and 2."""
    names = [place_model(comfy_base, "checkpoints", sd15_files.build_sd15_fixtures(None, "tiny", seed=k).single_file,
                         f"merge_in/seed{k}.safetensors") for k in (1, 2)]
    return tiny_models["single_file"], names


def merge_graph(base_name: str, models: str, output_name: str, method: str = "ties_soup",
                max_iterations: int = 2) -> dict:
    return {
        "1": {"class_type": "LuneMergeModels", "inputs": {
            "base_name": base_name, "models": models, "method": method, "density": 1.0, "drop_rate": 0.1,
            "strength": 1.0, "seed": 0, "max_iterations": max_iterations, "output_name": output_name}},
        "2": {"class_type": "LuneShift", "inputs": {"model": ["1", 0], "shift": 2.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 0, "steps": 2, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "lune_merge_test"}},
    }


def checkpoints_dir(comfy_base):
    return comfy_base / "models" / "checkpoints"


def test_merge_then_sample_writes_the_library_result(comfy, comfy_base, merge_inputs, tmp_path):
    base_name, names = merge_inputs
    result = comfy.run(merge_graph(base_name, "merge_in/*.safetensors\n# a comment\n" + base_name, "merged_soup"))
    assert result.ok, result.error_message()
    assert comfy.output_files(result)[0].is_file()
    out = checkpoints_dir(comfy_base) / "merged_soup.safetensors"
    with safe_open(out, framework="pt") as f:
        recipe = json.loads(f.metadata()[RECIPE_METADATA_KEY])
    assert recipe["method"] == "ties_soup" and recipe["models"] == ["seed1.safetensors", "seed2.safetensors"]
    folder = checkpoints_dir(comfy_base)
    reference = tmp_path / "library.safetensors"
    merge_models(str(folder / base_name), [str(folder / n) for n in names], str(reference),
                 MergeParams(method="ties_soup"))
    ours, theirs = load_file(out), load_file(reference)
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    base = load_file(folder / base_name)
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in base.items()}


def bad_cases(comfy_base, tmp_path, base_name, names):
    folder = checkpoints_dir(comfy_base)
    sd15_files.write_sdxl_like_unet(tmp_path / "sdxl.safetensors")
    sdxl = place_model(comfy_base, "checkpoints", tmp_path / "sdxl.safetensors", "bad/sdxl_unet.safetensors")
    marker = tmp_path / "pwned.txt"
    sd15_files.write_malicious_pt(tmp_path / "evil.pt", marker)
    evil = place_model(comfy_base, "checkpoints", tmp_path / "evil.pt", "bad/evil.pt")
    save_file({"x": torch.zeros(1)}, folder / "taken.safetensors")
    good = "\n".join(names)
    return marker, [
        ("missing file", good + "\nno_such_model.safetensors", "x1", ("no_such_model", "was not found")),
        ("glob matching nothing", "nothing_here/*.safetensors", "x2", ("matches no file",)),
        ("foreign architecture", good + "\n" + sdxl, "x3", ("does not match the base", "same architecture")),
        ("unsafe pickle", good + "\n" + evil, "x4", ("refused", "Nothing from the file was executed")),
        ("escaping path", "../" + good.splitlines()[0], "x5", ("outside the models folder",)),
        ("output exists", good, "taken", ("already exists", "nothing was overwritten")),
    ]


def test_bad_inputs_are_refused_nothing_written_next_prompt_runs(comfy, comfy_base, tiny_models, merge_inputs,
                                                                  tmp_path):
    base_name, names = merge_inputs
    marker, cases = bad_cases(comfy_base, tmp_path, base_name, names)
    folder = checkpoints_dir(comfy_base)
    taken = (folder / "taken.safetensors").read_bytes()
    for label, models, output_name, needles in cases:
        before = sorted(os.listdir(folder))
        result = comfy.run(merge_graph(base_name, models, output_name))
        assert not result.ok, f"{label}: the bad prompt must fail"
        message = result.error_message()
        print(f"{label}: {message}")
        for needle in needles:
            assert needle.lower() in message.lower(), f"{label}: {needle!r} not in {message}"
        assert sorted(os.listdir(folder)) == before, f"{label}: something was written to models/checkpoints"
        good = comfy.run(graphs.txt2img(tiny_models["single_file"], prefix="after_merge_error"))
        assert good.ok, good.error_message()
    assert (folder / "taken.safetensors").read_bytes() == taken
    assert not marker.exists(), "the pickle payload ran"
