"""lune.hub against a local fake of huggingface_hub (testbed.fixtures.fake_hub, no network): downloads with progress,
cancel and resume from the partial file, failures reported by cause (network / disk / bug), and repository listings
saved for offline use."""
from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

from comfyui_lune.lune import hub
from comfyui_lune.lune.errors import LuneBugError, MissingComponentError
from testbed.fixtures.fake_hub import FakeHub, go_offline, go_online

REPO = "someone/some-model"
FILE = "sub/model.bin"
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
CONNECTION_ADVICE = "Check the connection"


@pytest.fixture
def online(monkeypatch, tmp_path):
    go_online(monkeypatch, tmp_path / "hf_cache")
    monkeypatch.setattr(hub, "POLL_SECONDS", 0.01)
    return tmp_path / "models" / "someone_some-model"


def test_download_reports_progress_and_places_the_file(online, monkeypatch):
    fake = FakeHub({REPO: {FILE: PAYLOAD}}, chunk_bytes=len(PAYLOAD) // 8, chunk_seconds=0.03).install(monkeypatch)
    seen: list[tuple[int, int]] = []
    path = hub.fetch(REPO, FILE, str(online), progress=lambda done, total: seen.append((done, total)))
    print("progress reports:", seen)
    assert Path(path) == online / FILE and Path(path).read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert any(0 < done < len(PAYLOAD) for done, _ in seen), "no intermediate progress while the file grew"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert fake.calls[0]["resume_size"] == 0
    assert not list((online / hub.PARTIAL_FOLDER).rglob("*" + hub.PARTIAL_SUFFIX)), "partial file left behind"


def test_cancel_keeps_the_partial_file_and_the_next_run_resumes_it(online, monkeypatch):
    fake = FakeHub({REPO: {FILE: PAYLOAD}}, chunk_bytes=1024, chunk_seconds=0.02).install(monkeypatch)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(hub.DownloadCancelled) as info:
        hub.fetch(REPO, FILE, str(online), cancelled=stop.is_set)
    print(info.value)
    assert hub.CANCELLED in str(info.value)
    assert not (online / FILE).exists()
    partial = next((online / hub.PARTIAL_FOLDER).rglob("*" + hub.PARTIAL_SUFFIX))
    kept = partial.stat().st_size
    assert 0 < kept < len(PAYLOAD) and partial.read_bytes() == PAYLOAD[:kept]

    fake.chunk_seconds = 0.0
    path = hub.fetch(REPO, FILE, str(online))
    assert Path(path).read_bytes() == PAYLOAD
    assert fake.calls[-1]["resume_size"] >= kept > 0, fake.calls[-1]
    assert not partial.exists()


class HostInterrupt(Exception):
    """Stands for ComfyUI 0.3.75's InterruptProcessingException (an Exception there), raised by its progress hook."""


def test_an_exception_from_the_callers_progress_hook_passes_through_unchanged(online, monkeypatch):
    """ComfyUI's progress hook raises its interrupt when Cancel was pressed: that is a cancel, never "a bug"."""
    FakeHub({REPO: {FILE: PAYLOAD}}, chunk_bytes=1024, chunk_seconds=0.01).install(monkeypatch)
    interrupt = HostInterrupt()

    def hook(done, total):
        if done > 10_000:
            raise interrupt

    with pytest.raises(HostInterrupt) as info:
        hub.fetch(REPO, FILE, str(online), progress=hook)
    assert info.value is interrupt
    partial = next((online / hub.PARTIAL_FOLDER).rglob("*" + hub.PARTIAL_SUFFIX))
    assert 0 < partial.stat().st_size < len(PAYLOAD)


def test_a_partial_file_of_another_version_is_not_appended_to(online, monkeypatch):
    FakeHub({REPO: {FILE: PAYLOAD}}).install(monkeypatch)
    stale = Path(hub.partial_path(str(online), FILE, "an-older-etag"))
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\xff" * 5000)
    assert Path(hub.fetch(REPO, FILE, str(online))).read_bytes() == PAYLOAD


def test_file_already_in_local_dir_is_used_without_any_call(online, monkeypatch):
    (online / "sub").mkdir(parents=True)
    (online / FILE).write_bytes(b"x")
    FakeHub({}, fail=AssertionError("no call expected")).install(monkeypatch)
    assert hub.fetch(REPO, FILE, str(online)) == str(online / FILE)


def test_type_error_inside_is_a_bug_not_a_network_error(online, monkeypatch):
    boom = TypeError("http_get() got an unexpected keyword argument 'resume_size'")
    FakeHub({REPO: {FILE: PAYLOAD}}, fail=boom).install(monkeypatch)
    with pytest.raises(LuneBugError) as info:
        hub.fetch(REPO, FILE, str(online), progress=lambda d, t: None)
    message = str(info.value)
    print(message)
    assert CONNECTION_ADVICE.lower() not in message.lower() and "not a connection problem" in message
    assert "TypeError" in message and "bug" in message and str(online) in message
    assert info.value.__cause__ is boom, "the original traceback must stay attached"


@pytest.mark.parametrize("failure", [
    ConnectionError("Max retries exceeded"),
    TimeoutError("read timed out"),
    LocalEntryNotFoundError("cannot reach the Hub and not in the cache"),
], ids=["connection", "timeout", "unreachable-not-cached"])
def test_network_failures_say_check_the_connection(online, monkeypatch, failure):
    FakeHub({REPO: {FILE: PAYLOAD}}, fail=failure).install(monkeypatch)
    with pytest.raises(MissingComponentError, match=CONNECTION_ADVICE):
        hub.fetch(REPO, FILE, str(online))


def test_http_error_of_the_installed_stack_is_a_network_error():
    """HfHubHTTPError and the HTTP library under it (requests before 1.0, httpx after) count as network."""
    base = next(c for c in HfHubHTTPError.__mro__[1:] if c.__module__.split(".")[0] != "huggingface_hub")
    assert hub.is_network_error(HfHubHTTPError.__new__(HfHubHTTPError))
    assert hub.is_network_error(base.__new__(base))
    assert not hub.is_network_error(TypeError("x")) and not hub.is_network_error(OSError(errno.ENOSPC, "full"))


def test_disk_full_says_disk_not_connection(online, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")
    FakeHub({REPO: {FILE: PAYLOAD}}, fail=full).install(monkeypatch)
    with pytest.raises(MissingComponentError) as info:
        hub.fetch(REPO, FILE, str(online))
    assert "free disk space" in str(info.value) and CONNECTION_ADVICE not in str(info.value)


def test_offline_with_empty_cache_says_so(online, monkeypatch):
    FakeHub({REPO: {FILE: PAYLOAD}}).install(monkeypatch)
    go_offline(monkeypatch)
    with pytest.raises(MissingComponentError, match="offline") as info:
        hub.fetch(REPO, FILE, str(online))
    assert "Download it on a connected machine" in str(info.value) and str(online) in str(info.value)


def test_listing_is_saved_and_used_offline(online, monkeypatch):
    fake = FakeHub({REPO: {"a.pt": b"1", "unet/config.json": b"{}"}}).install(monkeypatch)
    files, source = hub.repo_files(REPO, str(online))
    assert (files, source) == (["a.pt", "unet/config.json"], "hub")
    go_offline(monkeypatch)
    fake.fail = AssertionError("offline: the Hub must not be asked")
    assert hub.repo_files(REPO, str(online)) == (files, "saved listing")
    assert hub.repo_files("other/repo", str(online)) == ([], "local files"), "a listing of another repo was used"


def test_unreachable_hub_falls_back_to_the_saved_listing(online, monkeypatch):
    fake = FakeHub({REPO: {"a.pt": b"1"}}).install(monkeypatch)
    hub.repo_files(REPO, str(online))
    fake.fail = ConnectionError("no route to host")
    assert hub.repo_files(REPO, str(online)) == (["a.pt"], "saved listing")


def test_offline_without_a_saved_listing_lists_the_local_files(online, monkeypatch):
    go_offline(monkeypatch)
    (online / "unet").mkdir(parents=True)
    (online / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    (online / hub.PARTIAL_FOLDER).mkdir()
    (online / hub.PARTIAL_FOLDER / "x.part").write_bytes(b"x")
    assert hub.repo_files(REPO, str(online)) == (["unet/diffusion_pytorch_model.bin"], "local files")
