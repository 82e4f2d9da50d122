"""lune.hub.fetch against local fakes of ``huggingface_hub.hf_hub_download`` (no network): the pre-1.1 signature
(no ``tqdm_class``: progress from the growing ``*.incomplete`` file), the ≥ 1.1 one (progress through tqdm), and
failures reported by cause (network / disk / bug)."""
from __future__ import annotations

import errno
import inspect
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

from lune import hub
from lune.errors import LuneBugError, MissingComponentError
from testbed.fixtures.fake_hub import CHUNKS, fake_hf_hub_download

REPO = "someone/some-model"
FILE = "sub/model.bin"
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
CONNECTION_ADVICE = "Check the connection"


def fake_download(*, with_tqdm_class: bool, fail: BaseException | None = None, calls: list | None = None):
    return fake_hf_hub_download({FILE: PAYLOAD}, with_tqdm_class=with_tqdm_class, fail=fail, calls=calls)


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online as far as the pack can tell (tests/conftest.py sets HF_HUB_OFFLINE=1), with an empty HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(hub, "POLL_SECONDS", 0.005)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kw: SimpleNamespace(size=len(PAYLOAD)))
    return tmp_path / "models" / "someone_some-model"


def test_signature_detection():
    assert not hub.accepts_tqdm_class(fake_download(with_tqdm_class=False))
    assert hub.accepts_tqdm_class(fake_download(with_tqdm_class=True))
    real = huggingface_hub.hf_hub_download
    assert hub.accepts_tqdm_class(real) == ("tqdm_class" in inspect.signature(real).parameters)


def test_pre_1_1_signature_downloads_with_polled_progress(online, monkeypatch):
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=False, calls=calls))
    seen: list[tuple[int, int]] = []
    path = hub.fetch(REPO, FILE, str(online), progress=lambda done, total: seen.append((done, total)))
    print("progress reports (polled):", seen)
    assert Path(path) == online / FILE and Path(path).read_bytes() == PAYLOAD
    assert all("tqdm_class" not in c for c in calls), "the old signature must never get tqdm_class"
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert any(0 < done < len(PAYLOAD) for done, _ in seen), "no intermediate progress while the file grew"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_tqdm_class_signature_forwards_progress(online, monkeypatch):
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=True, calls=calls))
    seen: list[tuple[int, int]] = []
    path = hub.fetch(REPO, FILE, str(online), progress=lambda done, total: seen.append((done, total)))
    print("progress reports (tqdm):", seen)
    assert Path(path).read_bytes() == PAYLOAD
    assert calls[-1]["tqdm_class"] is not None
    step = len(PAYLOAD) // CHUNKS
    assert [d for d, _ in seen[:CHUNKS]] == [step * (i + 1) for i in range(CHUNKS)]  # even with disable=True
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_file_already_in_local_dir_is_used_without_any_call(online, monkeypatch):
    (online / "sub").mkdir(parents=True)
    (online / FILE).write_bytes(b"x")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("no call expected"))
    assert hub.fetch(REPO, FILE, str(online)) == str(online / FILE)


def test_type_error_inside_is_a_bug_not_a_network_error(online, monkeypatch):
    boom = TypeError("hf_hub_download() got an unexpected keyword argument 'tqdm_klass'")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=False, fail=boom))
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
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=False, fail=failure))
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
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=False, fail=full))
    with pytest.raises(MissingComponentError) as info:
        hub.fetch(REPO, FILE, str(online))
    assert "free disk space" in str(info.value) and CONNECTION_ADVICE not in str(info.value)


def test_offline_with_empty_cache_says_so(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download(with_tqdm_class=False))
    with pytest.raises(MissingComponentError, match="offline") as info:
        hub.fetch(REPO, FILE, str(online))
    assert "Download it on a connected machine" in str(info.value) and str(online) in str(info.value)
