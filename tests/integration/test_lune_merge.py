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


def merge_node(base_name: str, models: str, output_name: str, method: str = "ties_soup", max_iterations: int = 2,
               **extra) -> dict:
    return {"class_type": "LuneMergeModels", "inputs": {
        "base_name": base_name, "models": models, "method": method, "density": 1.0, "drop_rate": 0.1,
        "strength": 1.0, "dropout_seed": 0, "max_iterations": max_iterations, "stop": "precision",
        "memory_budget_gib": 2.0, "output_name": output_name, "clip_vae_from": "(from the base)",
        **extra}}


def merge_graph(base_name: str, models: str, output_name: str, method: str = "ties_soup",
                max_iterations: int = 2, **extra) -> dict:
    return {
        "1": merge_node(base_name, models, output_name, method, max_iterations, **extra),
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
    assert recipe["method"] == "ties_soup"
    assert [m["name"] for m in recipe["models"]] == ["seed1.safetensors", "seed2.safetensors"]
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


def test_rerun_reuses_the_file_and_a_changed_recipe_is_refused(comfy, comfy_base, merge_inputs):
    """Queued twice with ComfyUI's cache cleared in between: the second run reuses the file (same inode and
    mtime: nothing merged or written); the same name with another recipe is refused and the file kept."""
    base_name, names = merge_inputs
    graph = merge_graph(base_name, "\n".join(names), "rerun_tgmd", method="tgmd")
    first = comfy.run(graph)
    assert first.ok, first.error_message()
    out = checkpoints_dir(comfy_base) / "rerun_tgmd.safetensors"
    before, content = out.stat(), out.read_bytes()
    comfy.executor.reset()  # a fresh ComfyUI cache, as after a restart
    second = comfy.run(graph)
    assert second.ok, second.error_message()
    after = out.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    changed = merge_graph(base_name, "\n".join(names), "rerun_tgmd", method="tgmd")
    changed["1"]["inputs"]["dropout_seed"] = 7
    refused = comfy.run(changed)
    assert not refused.ok
    message = refused.error_message()
    assert "another recipe" in message and "seed" in message and "nothing was overwritten" in message, message
    assert out.read_bytes() == content and out.stat().st_mtime_ns == before.st_mtime_ns


def test_nan_input_is_refused_naming_file_and_key(comfy, comfy_base, merge_inputs, tmp_path):
    base_name, names = merge_inputs
    folder = checkpoints_dir(comfy_base)
    tensors = load_file(folder / names[0])
    key = next(k for k in sorted(tensors) if k.startswith("model.diffusion_model.") and tensors[k].is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[3] = float("nan")
    save_file(tensors, tmp_path / "nan.safetensors")
    bad = place_model(comfy_base, "checkpoints", tmp_path / "nan.safetensors", "merge_bad/nan.safetensors")
    before = sorted(os.listdir(folder))
    result = comfy.run(merge_graph(base_name, names[1] + "\n" + bad, "nan_out"))
    assert not result.ok
    message = result.error_message()
    assert "nan.safetensors" in message and key in message and "non-finite" in message, message
    assert sorted(os.listdir(folder)) == before


def test_ema_and_position_ids_extras_merge_and_load(comfy, comfy_base, merge_inputs, tmp_path):
    """A model saved with its EMA copy (model_ema.*) and CLIP position_ids: the extras are ignored, not merged."""
    base_name, names = merge_inputs
    folder = checkpoints_dir(comfy_base)
    tensors = load_file(folder / names[0])
    unet = [k for k in tensors if k.startswith("model.diffusion_model.")][:4]
    for k in unet:
        tensors["model_ema." + k[len("model."):].replace(".", "")] = tensors[k].clone()
    tensors["model_ema.decay"] = torch.tensor(0.9999)
    tensors["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    save_file(tensors, tmp_path / "ema.safetensors")
    ema = place_model(comfy_base, "checkpoints", tmp_path / "ema.safetensors", "merge_real/ema.safetensors")
    result = comfy.run(merge_graph(base_name, ema + "\n" + names[1], "ema_merge", method="task_arithmetic"))
    assert result.ok, result.error_message()
    out = load_file(checkpoints_dir(comfy_base) / "ema_merge.safetensors")
    assert not any(k.startswith("model_ema.") for k in out)
    base = load_file(folder / base_name)
    a, b = load_file(folder / names[0]), load_file(folder / names[1])
    key = unet[0]
    theta0 = base[key].double()
    expected = theta0 + ((a[key].double() - theta0) + (b[key].double() - theta0)) / 2  # θ₀ + λ·mean τᵢ, λ = 1
    assert torch.equal(out[key], expected.to(base[key].dtype))


def test_unet_only_set_with_clip_vae_from_merges_and_samples(comfy, comfy_base, merge_inputs):
    """UNet-only files (no CLIP/VAE) merged with the CLIP and VAE of a full checkpoint: the output holds the
    donor's CLIP/VAE tensors bit for bit and samples."""
    base_name, _ = merge_inputs
    unets = [place_model(comfy_base, "checkpoints", sd15_files.build_sd15_fixtures(None, "tiny", seed=k).bare_unet,
                         f"merge_unets/unet{k}.safetensors") for k in (0, 1, 2)]
    result = comfy.run(merge_graph(unets[0], "merge_unets/*.safetensors", "unet_set", method="ties_soup",
                                   clip_vae_from=base_name))
    assert result.ok, result.error_message()
    out = load_file(checkpoints_dir(comfy_base) / "unet_set.safetensors")
    donor = load_file(checkpoints_dir(comfy_base) / base_name)
    clip_vae = [k for k in donor if k.startswith(("cond_stage_model.", "first_stage_model."))]
    assert clip_vae and all(torch.equal(out[k], donor[k]) for k in clip_vae)
    assert any(k.startswith("model.diffusion_model.") for k in out)


@pytest.mark.slow
def test_diffusers_unet_onto_full_checkpoint_uses_comfyui_name_map(comfy, comfy_base):
    """A full-size diffusers-named UNet (the same weights as the base's UNet) merged onto the full single file: the
    names map through ComfyUI's unet_to_diffusers, so every task vector is 0 and the output equals the base."""
    full = sd15_files.build_sd15_fixtures(None, "full", seed=0)
    base_name = place_model(comfy_base, "checkpoints", full.single_file, "merge_full/base.safetensors")
    unet = place_model(comfy_base, "checkpoints", full.diffusers_unet, "merge_full/unet/diffusion_model.safetensors")
    graph = {"1": merge_node(base_name, unet, "full_diffusers", method="task_arithmetic"),
             "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
             "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    result = comfy.run(graph)
    assert result.ok, result.error_message()
    out_path = checkpoints_dir(comfy_base) / "full_diffusers.safetensors"
    try:
        with safe_open(out_path, framework="pt") as out, safe_open(full.single_file, framework="pt") as base:
            unet_keys = [k for k in base.keys() if k.startswith("model.diffusion_model.")]
            assert set(unet_keys) <= set(out.keys())
            for key in unet_keys:
                assert torch.equal(out.get_tensor(key), base.get_tensor(key)), key
    finally:
        out_path.unlink()
