"""``[download]`` entries that name a repository and a rule (lune.download_rules, lune.download_entries), driven
against a fake Hub listing (testbed.fixtures.fake_hub): several epochs, ``.bin`` only, ``.safetensors`` and ``.bin``,
an empty repository, and offline resolution from the saved listing."""
from __future__ import annotations

import pytest

from comfyui_lune.lune import download_entries, hub
from comfyui_lune.lune.download_rules import DIFFUSERS_UNET, FIXED, NEWEST_EPOCH, SINGLE_FILE, DownloadEntry
from comfyui_lune.lune.errors import MissingComponentError
from testbed.fixtures.fake_hub import FakeHub, go_offline, go_online

SOL = next(e for e in download_entries.MODEL_ENTRIES if e.variant == "sol")
INSTAFLOW = [e for e in download_entries.MODEL_ENTRIES if e.variant == "instaflow"]
SQCU = download_entries.SQCU_SDXL_VPRED
X = b"x"


@pytest.fixture
def online(monkeypatch, tmp_path):
    go_online(monkeypatch, tmp_path / "hf_cache")
    return tmp_path / "models"


def _resolve(entry, files, local) -> list[str]:
    return hub.entry_files(entry, str(local / entry.repo.replace("/", "_")))


def test_entries_cover_the_templates_models():
    assert SOL.rule == NEWEST_EPOCH and SOL.repo == "AbstractPhil/sd15-flow-matching"
    assert {e.repo for e in INSTAFLOW} == {"XCLiu/instaflow_0_9B_from_sd_1_5", "XCLiu/2_rectified_flow_from_sd_1_5"}
    assert all(e.rule == DIFFUSERS_UNET and "CC-BY-NC-4.0" in e.label for e in INSTAFLOW)
    assert SQCU.rule == SINGLE_FILE and SQCU.folder == "checkpoints"
    assert download_entries.SD15_COMPANION.rule == FIXED


def test_several_epochs_resolve_to_the_newest(online, monkeypatch):
    files = {"README.md": X, "sd15_flow_matching_e9_s9000.pt": X, "sd15_flow_matching_e12_s12000.pt": X,
             "sd15_flow_matching_e12_s11500.pt": X, "sd15_flow_matching_e100_s1000.pt": X,
             "samples/e200.png": X, "config.json": X}
    FakeHub({SOL.repo: files}).install(monkeypatch)
    assert _resolve(SOL, files, online) == ["sd15_flow_matching_e100_s1000.pt"]


def test_epochs_in_folder_names_and_steps_break_ties():
    entry = DownloadEntry("a/b", "diffusion_models", NEWEST_EPOCH)
    assert entry.resolve(["epoch_3/model.pt", "epoch_10/model.pt", "epoch_10/optimizer.txt"]) == ["epoch_10/model.pt"]
    assert entry.resolve(["run_e5_s100.pt", "run_e5_s900.pt", "run_e4_s9999.pt"]) == ["run_e5_s900.pt"]


@pytest.mark.parametrize("listing,expected", [
    ({"unet/diffusion_pytorch_model.bin": X, "unet/config.json": X, "model_index.json": X},
     ["unet/diffusion_pytorch_model.bin", "unet/config.json"]),
    ({"unet/diffusion_pytorch_model.bin": X, "unet/diffusion_pytorch_model.safetensors": X,
      "unet/config.json": X, "vae/diffusion_pytorch_model.safetensors": X},
     ["unet/diffusion_pytorch_model.safetensors", "unet/config.json"]),
    ({"unet/diffusion_pytorch_model.fp16.safetensors": X, "unet/diffusion_pytorch_model.bin": X},
     ["unet/diffusion_pytorch_model.fp16.safetensors"]),
], ids=["bin-only", "safetensors-and-bin", "fp16-over-bin"])
def test_diffusers_unet_takes_the_weights_the_repo_holds(online, monkeypatch, listing, expected):
    entry = INSTAFLOW[0]
    FakeHub({entry.repo: listing}).install(monkeypatch)
    assert _resolve(entry, listing, online) == expected


@pytest.mark.parametrize("entry", [SOL, INSTAFLOW[0], SQCU], ids=["sol", "instaflow", "sqcu"])
def test_an_empty_repo_says_what_was_looked_for(online, monkeypatch, entry):
    FakeHub({entry.repo: {}}).install(monkeypatch)
    with pytest.raises(MissingComponentError) as info:
        _resolve(entry, {}, online)
    print(info.value)
    assert entry.repo in str(info.value) and "no files" in str(info.value)


def test_single_file_checkpoint(online, monkeypatch):
    listing = {"sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr.safetensors": X, "README.md": X,
               "unet/diffusion_pytorch_model.safetensors": X}
    FakeHub({SQCU.repo: listing}).install(monkeypatch)
    assert _resolve(SQCU, listing, online) == ["sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr.safetensors"]
    entry = DownloadEntry("o/model", "checkpoints", SINGLE_FILE)
    assert entry.resolve(["model.safetensors", "model-ema.safetensors"]) == ["model.safetensors"]
    assert entry.resolve(["x.ckpt"]) == ["x.ckpt"]
    with pytest.raises(MissingComponentError, match="several"):
        entry.resolve(["a.safetensors", "b.safetensors"])


def test_offline_resolves_from_the_saved_listing(online, monkeypatch):
    files = {"sd15_flow_matching_e9_s9000.pt": X, "sd15_flow_matching_e12_s12000.pt": X}
    fake = FakeHub({SOL.repo: files}).install(monkeypatch)
    assert _resolve(SOL, files, online) == ["sd15_flow_matching_e12_s12000.pt"]
    go_offline(monkeypatch)
    fake.fail = AssertionError("offline: the Hub must not be asked")
    assert _resolve(SOL, files, online) == ["sd15_flow_matching_e12_s12000.pt"]
    assert fake.listings == [SOL.repo]


def test_a_finished_download_is_kept_when_a_newer_epoch_appears(online, monkeypatch):
    files = {"sd15_flow_matching_e9_s9000.pt": X}
    fake = FakeHub({SOL.repo: files}).install(monkeypatch)
    local = online / SOL.repo.replace("/", "_")
    assert hub.entry_files(SOL, str(local)) == ["sd15_flow_matching_e9_s9000.pt"]
    (local / "sd15_flow_matching_e9_s9000.pt").write_bytes(X)
    fake.repos[SOL.repo]["sd15_flow_matching_e10_s10000.pt"] = X
    assert hub.entry_files(SOL, str(local)) == ["sd15_flow_matching_e9_s9000.pt"]
    assert fake.listings == [SOL.repo], "a complete download must not list the Hub again"
