"""Loader features beyond the formats: auto variant, Hugging Face download entries, .pt conversion, reloads."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from testbed import graphs
from testbed.env import place_model

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def node_map(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS


def _sampling(model):
    return model.get_model_object("model_sampling")


@pytest.mark.parametrize("filename,expected_class,variant", [
    ("sd15-flow-matching-sol.safetensors", "SolSampling", "sol"),
    ("sd15-flow-lune-flux_COMFYUI.safetensors", "LuneFlowSampling", "lune-flux"),
    ("mystery_model.safetensors", "LuneFlowSampling", "lune"),
])
def test_auto_variant_from_path(node_map, comfy_base, tiny_sd15, filename, expected_class, variant, caplog):
    name = place_model(comfy_base, "checkpoints", tiny_sd15.single_file, filename)
    with caplog.at_level("INFO", logger="lune"):
        model = node_map["LuneModelLoader"]().load(name, "auto", 2.0, "(from model file)")[0]
    assert type(_sampling(model)).__name__ == expected_class
    assert _sampling(model).lune_variant == variant
    assert any(f"variant {variant}" in r.getMessage() for r in caplog.records), "the choice must be logged"


def _fake_hf_cache(root, repo_id, files: dict):
    """A Hugging Face cache entry as huggingface_hub lays it out: refs/main → snapshots/<commit>/<files>."""
    commit = "0" * 40
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for rel, src in files.items():
        dest = repo_dir / "snapshots" / commit / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return root


def test_download_entry_uses_offline_hf_cache(comfy, node_map, tiny_models, tiny_sd15, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from comfyui_lune.lune.variants import get_variant

    v = get_variant("lune-flux")
    folder = os.path.dirname(v.hf_unet_file)
    cache = _fake_hf_cache(tmp_path / "hf", v.hf_repo, {
        v.hf_unet_file: tiny_sd15.diffusers_unet, f"{folder}/config.json": tiny_sd15.diffusers_config})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = f"[download] {v.hf_repo}"
    assert entry in node_map["LuneModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    result = comfy.run(graphs.txt2img(entry, clip_vae_from=tiny_models["single_file"], prefix="hf_cache"))
    assert result.ok, result.error_message()
    model = node_map["LuneModelLoader"]().load(entry, "auto", 2.0, tiny_models["single_file"])[0]
    assert _sampling(model).lune_variant == "lune-flux"


def test_download_offline_with_empty_cache_says_what_to_do(comfy, tiny_models, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = comfy.run(graphs.txt2img("[download] AbstractPhil/sd15-flow-lune",
                                      clip_vae_from=tiny_models["single_file"], prefix="hf_empty"))
    assert not result.ok
    assert "offline" in result.error_message() and "Download it on a connected machine" in result.error_message()
    assert comfy.run(graphs.txt2img(tiny_models["single_file"], prefix="after_hf")).ok


def test_convert_training_state_once_never_overwrites(comfy, comfy_base, node_map, tiny_sd15, tiny_models, tmp_path):
    src = tmp_path / "lune_train_copy.pt"
    shutil.copyfile(tiny_sd15.training_state, src)
    name = place_model(comfy_base, "diffusion_models", tmp_path, "convert_case")  # the folder, so output is listed
    before = src.stat().st_mtime_ns, src.stat().st_size
    out = node_map["LuneConvertToSafetensors"]().convert(f"{name}/lune_train_copy.pt")["result"][0]
    assert out.endswith("lune_train_copy.unet.safetensors") and os.path.isfile(out)
    assert (src.stat().st_mtime_ns, src.stat().st_size) == before, "the source must be untouched"
    # the converted file is a plain LDM UNet: the pack and the stock UNETLoader both load it, same weights
    pack = node_map["LuneModelLoader"]().load(f"{name}/lune_train_copy.unet.safetensors", "lune", 2.0,
                                               tiny_models["single_file"])[0]
    stock = comfy.nodes.UNETLoader().load_unet(f"{name}/lune_train_copy.unet.safetensors", "default")[0]
    ref = node_map["LuneModelLoader"]().load(tiny_models["training_state"], "lune", 2.0, tiny_models["single_file"])[0]
    a, b, c = (m.model.diffusion_model.state_dict() for m in (pack, stock, ref))
    assert all(torch.equal(a[k], c[k]) and torch.equal(b[k], c[k]) for k in c)
    # converting again never overwrites: the node reports the existing file, the library refuses
    stamp = os.stat(out).st_mtime_ns
    again = node_map["LuneConvertToSafetensors"]().convert(f"{name}/lune_train_copy.pt")
    assert "already converted" in again["ui"]["text"][0] and os.stat(out).st_mtime_ns == stamp
    from comfyui_lune.lune.convert import convert_to_safetensors
    from comfyui_lune.lune.errors import LuneError

    with pytest.raises(LuneError, match="already exists"):
        convert_to_safetensors(str(src), out)


def test_replaced_file_is_reloaded(comfy, comfy_base, tiny_models, tiny_sd15, tmp_path):
    """Same model_name, new bytes on disk → the next prompt loads the new file (IS_CHANGED tracks mtime/size)."""
    target = tmp_path / "swap.safetensors"
    shutil.copyfile(tiny_sd15.single_file, target)
    name = place_model(comfy_base, "checkpoints", target, "swap_case.safetensors")
    g = graphs.txt2img(name, prefix="swap")
    assert comfy.run(g).ok
    target.write_bytes(b"")  # replaced by a broken download
    result = comfy.run(g)
    assert not result.ok and "empty" in result.error_message()
