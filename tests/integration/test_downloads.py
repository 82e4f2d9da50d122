"""The ``[download]`` entries of the pack's loaders in the real ComfyUI, against a local fake of the Hub
(``testbed.fixtures.fake_hub``: serves fixture files, lists repositories, can be slow):

* fixed entries (lune's training state, Lyra's two files) download with ComfyUI's progress bar moving;
* rule entries resolve what the repository holds: Sol's newest epoch, InstaFlow's ``unet/`` as ``.bin`` only (read
  with weights_only) with its licence logged before the download, the SD1.5 donor of clip_vae_from, SQCU's single
  file on Load Checkpoint (Lune downloads);
* Cancel during a slow download ends the prompt as ComfyUI's interrupt with "download cancelled; run again to
  resume", quickly; the next prompt runs and resumes from the partial file;
* a TypeError inside the download is reported as a bug, not as a connection problem, and ComfyUI keeps serving.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from testbed.fixtures import lyra_files
from testbed.fixtures.fake_hub import FakeHub, go_online

pytestmark = pytest.mark.comfy

LUNE_REPO = "AbstractPhil/sd15-flow-lune"
LUNE_ENTRY = "[download] AbstractPhil/sd15-flow-lune"
LUNE_FILE = "sd15_flow_lune_e52_s52000.pt"
LYRA_REPO = "AbstractPhil/vae-lyra"
LYRA_ENTRY = "[download] AbstractPhil/vae-lyra"
SOL_REPO = "AbstractPhil/sd15-flow-matching"
INSTAFLOW_REPO = "XCLiu/instaflow_0_9B_from_sd_1_5"
SD15_REPO = "Comfy-Org/stable-diffusion-v1-5-archive"
SD15_FILE = "v1-5-pruned-emaonly-fp16.safetensors"
SQCU_REPO = "SQCU/sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr"
FROM_FILE = "(from model file)"
CANCEL_MESSAGE = "download cancelled; run again to resume"
# Cancel must end the prompt long before the slow fake download would finish (CANCEL_FAKE_SECONDS); the bound is
# generous on purpose (a shared 2-core machine): it tells "stopped" from "waited for the download".
CANCEL_FAKE_SECONDS = 60.0
CANCEL_BOUND_SECONDS = 10.0


@pytest.fixture(scope="module")
def lyra_source(tmp_path_factory) -> Path:
    """model.pt (trainer layout, no optimizer state) + config.json as published, to be "downloaded"."""
    folder = tmp_path_factory.mktemp("lyra_source")
    lyra_files.write_trainer_pt(folder / "model.pt", lyra_files.random_state_dict(seed=5), optimizer=False)
    lyra_files.write_config_json(folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def unet_bin(tiny_sd15, tmp_path_factory) -> Path:
    """The tiny diffusers UNet as a pickled ``diffusion_pytorch_model.bin`` (what a 2023 diffusers repo holds)."""
    path = tmp_path_factory.mktemp("unet_bin") / "diffusion_pytorch_model.bin"
    torch.save(load_file(tiny_sd15.diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors"), path)
    return path


@pytest.fixture
def hub_repos(tiny_sd15, lyra_source, unet_bin) -> dict:
    return {
        LUNE_REPO: {LUNE_FILE: tiny_sd15.training_state},
        LYRA_REPO: {"model.pt": lyra_source / "model.pt", "config.json": lyra_source / "config.json"},
        SOL_REPO: {"sd15_flow_matching_e9_s9000.pt": b"not this one", "README.md": b"# Sol",
                   "sd15_flow_matching_e12_s12000.pt": tiny_sd15.training_state},
        INSTAFLOW_REPO: {"model_index.json": b"{}",
                         "unet/config.json": tiny_sd15.diffusers_dir / "unet" / "config.json",
                         "unet/diffusion_pytorch_model.bin": unet_bin},
        SD15_REPO: {SD15_FILE: tiny_sd15.single_file},
        SQCU_REPO: {"README.md": b"#", "sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr.safetensors": tiny_sd15.single_file},
    }


@pytest.fixture
def online(comfy, monkeypatch, tmp_path):
    """An empty models folder, an empty HF cache, not offline, fast polling; ComfyUI progress recorded.

    Returns (models_dir, progress list of (value, total))."""
    import comfy.utils as comfy_utils
    import folder_paths

    models = tmp_path / "models"
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    go_online(monkeypatch, tmp_path / "hf_cache")
    pack_root = sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"].__module__].__package__.rsplit(".", 1)[0]
    monkeypatch.setattr(sys.modules[f"{pack_root}.lune.hub"], "POLL_SECONDS", 0.01)
    progress: list[tuple[int, int]] = []
    monkeypatch.setattr(comfy_utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: progress.append((value, total)))
    return models, progress


def _intermediate(progress, total) -> list[int]:
    return [v for v, t in progress if t == total and 0 < v < total]


def test_fixed_entries_download_with_progress(comfy, online, hub_repos, monkeypatch):
    models, progress = online
    fake = FakeHub(hub_repos, chunk_bytes=1 << 16, chunk_seconds=0.02).install(monkeypatch)
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS

    model = nodes["LuneModelLoader"]().load(LUNE_ENTRY, "auto", 2.0, FROM_FILE)[0]
    assert model.get_model_object("model_sampling").lune_variant == "lune"
    placed = models / "diffusion_models" / "AbstractPhil_sd15-flow-lune" / LUNE_FILE
    assert placed.read_bytes() == Path(hub_repos[LUNE_REPO][LUNE_FILE]).read_bytes()
    print("Lune download progress (ComfyUI bar):", progress)
    assert progress[-1] == (100, 100) and _intermediate(progress, 100), progress

    progress.clear()
    lyra = nodes["LyraLoader"]().load(LYRA_ENTRY)[0]
    folder = models / "lyra" / "AbstractPhil_vae-lyra"
    assert json.loads((folder / "config.json").read_text()) == json.loads(
        Path(hub_repos[LYRA_REPO]["config.json"]).read_text())
    assert (folder / "model.pt").stat().st_size == Path(hub_repos[LYRA_REPO]["model.pt"]).stat().st_size
    assert next(lyra.model.parameters()).dtype == torch.float32
    assert progress[-1] == (200, 200)
    assert any(100 < v < 200 for v, _ in progress), "model.pt (the second file) showed no progress while growing"

    # downloaded once: the entries now resolve locally, and their reload stamps follow the placed files
    fake.calls.clear()
    nodes["LyraLoader"]().load(LYRA_ENTRY)
    assert fake.calls == []
    assert str(folder / "model.pt") in nodes["LyraLoader"].IS_CHANGED(LYRA_ENTRY)[0]
    assert str(placed) in nodes["LuneModelLoader"].IS_CHANGED(LUNE_ENTRY, "auto", 2.0, FROM_FILE)[0]


def _entry(comfy, node: str, widget: str, repo: str) -> str:
    options = comfy.nodes.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["required"][widget][0]
    return next(o for o in options if o.startswith(f"[download] {repo}"))


def test_rule_entries_resolve_what_the_repository_holds(comfy, online, hub_repos, monkeypatch, caplog):
    models, _ = online
    fake = FakeHub(hub_repos).install(monkeypatch)
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    loader = nodes["LuneModelLoader"]()

    sol = _entry(comfy, "LuneModelLoader", "model_name", SOL_REPO)
    model = loader.load(sol, "auto", 0.0, FROM_FILE)[0]
    assert model.get_model_object("model_sampling").lune_variant == "sol"
    sol_dir = models / "diffusion_models" / "AbstractPhil_sd15-flow-matching"
    assert sorted(p.name for p in sol_dir.glob("*.pt")) == ["sd15_flow_matching_e12_s12000.pt"]

    insta = _entry(comfy, "LuneModelLoader", "model_name", INSTAFLOW_REPO)
    assert "CC-BY-NC-4.0" in insta
    donor = _entry(comfy, "LuneModelLoader", "clip_vae_from", SD15_REPO)
    with caplog.at_level(logging.INFO, logger="lune"):
        model, clip, vae = loader.load(insta, "auto", 0.0, donor)
    assert model.get_model_object("model_sampling").lune_variant == "instaflow"
    licence = [r.getMessage() for r in caplog.records if "CC-BY-NC-4.0" in r.getMessage()]
    downloading = [i for i, r in enumerate(caplog.records) if "downloading XCLiu/instaflow" in r.getMessage()]
    assert licence and downloading, [r.getMessage() for r in caplog.records]
    assert caplog.records.index(next(r for r in caplog.records if "CC-BY-NC-4.0" in r.getMessage())) < downloading[0]
    insta_dir = models / "diffusion_models" / "XCLiu_instaflow_0_9B_from_sd_1_5"
    assert (insta_dir / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert not (insta_dir / "model_index.json").exists(), "only unet/ is fetched"
    assert (models / "checkpoints" / "Comfy-Org_stable-diffusion-v1-5-archive" / SD15_FILE).is_file()
    assert clip is not None and vae is not None

    sqcu = _entry(comfy, "LuneCheckpointLoader", "ckpt_name", SQCU_REPO)
    out = nodes["LuneCheckpointLoader"]().load(sqcu)
    assert all(o is not None for o in out)
    assert (models / "checkpoints" / "SQCU_sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr"
            / "sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr.safetensors").is_file()
    assert set(fake.listings) == {SOL_REPO, INSTAFLOW_REPO, SQCU_REPO}


@pytest.mark.parametrize("seen_by", ["interrupt-poll", "progress-hook"])
def test_cancel_ends_the_prompt_and_the_next_run_resumes(comfy, online, hub_repos, monkeypatch, tiny_models,
                                                          caplog, seen_by):
    """interrupt-poll: the pack polls ComfyUI's interrupt flag; progress-hook: ComfyUI's server progress hook raises
    its interrupt inside the progress report (what the running server does), which must not read as a bug."""
    import comfy.model_management as mm
    import comfy.utils as comfy_utils
    from testbed import graphs

    models, _ = online
    if seen_by == "progress-hook":
        monkeypatch.setattr(comfy_utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                            mm.throw_exception_if_processing_interrupted())
    source = Path(hub_repos[LUNE_REPO][LUNE_FILE]).read_bytes()
    chunk = max(1, len(source) // 400)
    fake = FakeHub(hub_repos, chunk_bytes=chunk, chunk_seconds=CANCEL_FAKE_SECONDS / 400).install(monkeypatch)
    pressed: dict = {}

    def press_cancel():
        fake.started.wait(60)
        time.sleep(0.3)
        pressed["at"] = time.monotonic()
        mm.interrupt_current_processing(True)

    threading.Thread(target=press_cancel, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="lune"):
        result = comfy.run(graphs.txt2img(LUNE_ENTRY, clip_vae_from=tiny_models["single_file"], prefix="dl_cancel"))
    ended = time.monotonic()
    events = [e for e, _ in result.messages]
    print("events:", events, "cancel → end: %.2f s" % (ended - pressed["at"]))
    assert not result.ok and "execution_interrupted" in events and "execution_error" not in events, events
    assert ended - pressed["at"] < CANCEL_BOUND_SECONDS, "the prompt waited for the download instead of stopping"
    assert any(CANCEL_MESSAGE in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    folder = models / "diffusion_models" / "AbstractPhil_sd15-flow-lune"
    assert not (folder / LUNE_FILE).exists()
    partial = next(folder.rglob("*.part"))
    time.sleep(0.5)  # the worker stops at its next chunk
    kept = partial.stat().st_size
    assert 0 < kept < len(source)

    fake.chunk_seconds = 0.0
    fake.chunk_bytes = 1 << 16
    result = comfy.run(graphs.txt2img(LUNE_ENTRY, clip_vae_from=tiny_models["single_file"], prefix="dl_resumed"))
    assert result.ok, result.error_message()
    assert fake.calls[-1]["resume_size"] >= kept, fake.calls[-1]
    assert (folder / LUNE_FILE).read_bytes() == source


def test_type_error_inside_is_reported_as_a_bug_and_comfyui_keeps_serving(comfy, online, hub_repos, monkeypatch,
                                                                          tiny_models):
    from testbed import graphs

    FakeHub(hub_repos, fail=TypeError("http_get() got an unexpected keyword argument 'resume_size'")).install(
        monkeypatch)
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
