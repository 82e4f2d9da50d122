"""The ``[download]`` entries of Load Lune Model and Load Lyra in the real ComfyUI, against local fakes of
``huggingface_hub.hf_hub_download`` (``testbed.fixtures.fake_hub``: copies local fixture files into place):

* huggingface_hub's pre-1.1 signature (no ``tqdm_class``, every transformers-4.x install): both entries succeed and
  ComfyUI's progress bar moves while the file grows;
* the ≥ 1.1 signature: progress comes through ``tqdm_class``;
* a TypeError inside the download is reported as a bug, not as a connection problem, and ComfyUI keeps serving.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch

from testbed.fixtures import lyra_files
from testbed.fixtures.fake_hub import fake_hf_hub_download

pytestmark = pytest.mark.comfy

LUNE_ENTRY = "[download] AbstractPhil/sd15-flow-lune"
LUNE_FILE = "sd15_flow_lune_e52_s52000.pt"
LYRA_ENTRY = "[download] AbstractPhil/vae-lyra"
FROM_FILE = "(from model file)"


@pytest.fixture(scope="module")
def lyra_source(tmp_path_factory) -> Path:
    """model.pt (trainer layout, no optimizer state) + config.json as published, to be "downloaded"."""
    folder = tmp_path_factory.mktemp("lyra_source")
    lyra_files.write_trainer_pt(folder / "model.pt", lyra_files.random_state_dict(seed=5), optimizer=False)
    lyra_files.write_config_json(folder / "config.json")
    return folder


@pytest.fixture
def sources(tiny_sd15, lyra_source) -> dict:
    return {LUNE_FILE: tiny_sd15.training_state, "model.pt": lyra_source / "model.pt",
            "config.json": lyra_source / "config.json"}


@pytest.fixture
def online(comfy, monkeypatch, tmp_path):
    """An empty models folder, an empty HF cache, not offline, fast polling; ComfyUI progress recorded.

    Returns (models_dir, progress list of (value, total))."""
    import comfy.utils as comfy_utils
    import folder_paths

    models = tmp_path / "models"
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    pack_root = sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"].__module__].__package__.rsplit(".", 1)[0]
    monkeypatch.setattr(sys.modules[f"{pack_root}.lune.hub"], "POLL_SECONDS", 0.005)
    sizes: dict[str, int] = {}
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata",
                        lambda url, **kw: type("Meta", (), {"size": sizes[url.rsplit("/", 1)[-1]]})())
    progress: list[tuple[int, int]] = []
    monkeypatch.setattr(comfy_utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: progress.append((value, total)))
    return models, progress, sizes


def _fake(monkeypatch, sources, sizes, **kw):
    sizes.update({name: Path(src).stat().st_size for name, src in sources.items()})
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download(sources, calls=calls, **kw))
    return calls


def _intermediate(progress, total) -> list[int]:
    return [v for v, t in progress if t == total and 0 < v < total]


def test_both_entries_download_with_the_pre_1_1_signature(comfy, online, sources, monkeypatch):
    models, progress, sizes = online
    calls = _fake(monkeypatch, sources, sizes, with_tqdm_class=False)
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS

    model = nodes["LuneModelLoader"]().load(LUNE_ENTRY, "auto", 2.0, FROM_FILE)[0]
    assert model.get_model_object("model_sampling").lune_variant == "lune"
    placed = models / "diffusion_models" / "AbstractPhil_sd15-flow-lune" / LUNE_FILE
    assert placed.read_bytes() == Path(sources[LUNE_FILE]).read_bytes()
    print("Lune download progress (ComfyUI bar):", progress)
    assert progress[-1] == (100, 100) and _intermediate(progress, 100), progress

    progress.clear()
    lyra = nodes["LyraLoader"]().load(LYRA_ENTRY)[0]
    folder = models / "lyra" / "AbstractPhil_vae-lyra"
    assert json.loads((folder / "config.json").read_text()) == json.loads(Path(sources["config.json"]).read_text())
    assert (folder / "model.pt").stat().st_size == Path(sources["model.pt"]).stat().st_size
    assert next(lyra.model.parameters()).dtype == torch.float32
    print("Lyra download progress (ComfyUI bar, 2 files):", progress)
    assert progress[-1] == (200, 200)
    assert any(100 < v < 200 for v, _ in progress), "model.pt (the second file) showed no progress while growing"
    assert all("tqdm_class" not in c for c in calls)

    # downloaded once: the entries now resolve locally, and their reload stamps follow the placed files
    calls.clear()
    nodes["LyraLoader"]().load(LYRA_ENTRY)
    assert calls == []
    assert str(folder / "model.pt") in nodes["LyraLoader"].IS_CHANGED(LYRA_ENTRY)[0]
    assert str(placed) in nodes["LuneModelLoader"].IS_CHANGED(LUNE_ENTRY, "auto", 2.0, FROM_FILE)[0]


def test_tqdm_class_signature_reports_progress(comfy, online, sources, monkeypatch):
    models, progress, sizes = online
    calls = _fake(monkeypatch, sources, sizes, with_tqdm_class=True)
    comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]().load(LUNE_ENTRY, "lune", 2.0, FROM_FILE)
    print("Lune download progress via tqdm_class:", progress)
    assert calls[-1]["tqdm_class"] is not None
    assert progress[-1] == (100, 100) and len(_intermediate(progress, 100)) >= 3, progress


def test_type_error_inside_is_reported_as_a_bug_and_comfyui_keeps_serving(comfy, online, sources, monkeypatch,
                                                                          tiny_models):
    from testbed import graphs

    _, _, sizes = online
    _fake(monkeypatch, sources, sizes, with_tqdm_class=False,
          fail=TypeError("hf_hub_download() got an unexpected keyword argument 'tqdm_class'"))
    result = comfy.run(graphs.txt2img(LUNE_ENTRY, clip_vae_from=tiny_models["single_file"], prefix="dl_bug"))
    assert not result.ok
    message = result.error_message()
    print(message)
    assert "TypeError" in message and "bug" in message and "not a connection problem" in message
    assert "Check the connection" not in message
    lyra = {"1": {"class_type": "LyraLoader", "inputs": {"lyra_name": LYRA_ENTRY}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = comfy.run(lyra)
    assert not result.ok and "not a connection problem" in result.error_message()
    monkeypatch.undo()  # the real models folder again
    assert comfy.run(graphs.txt2img(tiny_models["single_file"], prefix="after_dl_bug")).ok
