"""Optional downloads from the Hugging Face Hub (never at import time; huggingface_hub imported lazily).

Order of lookup for ``fetch(repo, file, local_dir)``:
  1. ``local_dir/file`` already there (a previous download into ComfyUI's model folder) → use it;
  2. the standard HF cache (``~/.cache/huggingface`` / ``HF_HOME``), without network → use it in place;
  3. unless offline (``HF_HUB_OFFLINE=1`` or ``offline=True``): download into ``local_dir`` with progress.
Offline with nothing cached raises MissingComponentError saying where to put the file.

Progress, in ``(bytes done, bytes total)``:
  * huggingface_hub ≥ 1.1.0: ``hf_hub_download(tqdm_class=…)`` (added in 1.1.0) gets a tqdm subclass that forwards
    every update. The parameter is detected from the installed function's signature, never from a version number.
  * older huggingface_hub (every install that keeps transformers 4.x, which pins huggingface_hub < 1.0): the download
    runs in a worker thread while the calling thread polls the size of the file being written, which
    huggingface_hub names ``*.incomplete`` (``file_download.py``: ``<blob>.incomplete`` in the cache before 0.23,
    ``<local_dir>/.cache/huggingface/download/<hash>.<etag>.incomplete`` from 0.23 on), against the size the Hub
    reports (``get_hf_file_metadata(hf_hub_url(...)).size``). Progress callbacks run on the calling thread.
  Either way the last report is ``(size, size)`` of the finished file.

Errors: only network and HTTP failures say "check the connection"; a full disk or an unwritable folder says so;
anything else (``TypeError``, ``AttributeError``, …) is a bug and is reported as one (LuneBugError, chained).

APIs used and the huggingface_hub version that has them (all present in 0.20.0, the declared floor):
``hf_hub_download(local_dir=, local_files_only=)``, ``hf_hub_url``, ``get_hf_file_metadata``,
``constants.HF_HUB_CACHE``, ``utils.{tqdm, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled}``.
The error classes come from ``huggingface_hub.utils``, which has them from 0.20.0 to today: the newer
``huggingface_hub.errors`` module does not have them in 0.20–0.23.
"""
from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
from typing import Callable

from .errors import LuneBugError, LuneError, MissingComponentError

log = logging.getLogger("lune")

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)

#: How often (seconds) the size of the partial file is read when ``tqdm_class`` is not available.
POLL_SECONDS = 0.5
INCOMPLETE_SUFFIX = ".incomplete"


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def accepts_tqdm_class(download: Callable) -> bool:
    """True when ``download`` (``hf_hub_download``) has a ``tqdm_class`` parameter (huggingface_hub ≥ 1.1.0)."""
    try:
        return "tqdm_class" in inspect.signature(download).parameters
    except (TypeError, ValueError):  # not introspectable: assume the older signature
        return False


def _progress_class(callback: ProgressCallback):
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ForwardingTqdm(hf_tqdm):
        """Counts the bytes itself: a disabled tqdm (HF_HUB_DISABLE_PROGRESS_BARS, no terminal) never advances ``n``."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bytes_done = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            out = super().update(n)
            self.bytes_done += int(n or 0)
            if self.total:
                callback(min(self.bytes_done, int(self.total)), int(self.total))
            return out

    return ForwardingTqdm


# ------------------------------------------------------------------------------------------------ polling progress

def remote_size(repo_id: str, filename: str) -> int | None:
    """Size in bytes the Hub reports for the file (one HEAD request), or None when it cannot tell."""
    import huggingface_hub

    try:
        size = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, filename)).size
    except Exception as e:  # only progress depends on it; the download itself reports real failures
        log.info("size of %s/%s unknown (%s: %s); progress shows the end only", repo_id, filename,
                 type(e).__name__, e)
        return None
    return int(size) if size else None


def partial_download_dirs(repo_id: str, local_dir: str) -> list[str]:
    """Folders where huggingface_hub writes ``*.incomplete`` files for a download of ``repo_id`` into local_dir."""
    from huggingface_hub import constants

    cache_repo = os.path.join(str(constants.HF_HUB_CACHE), "models--" + repo_id.replace("/", "--"), "blobs")
    return [os.path.join(local_dir, ".cache", "huggingface", "download"), cache_repo]


def incomplete_bytes(folders: list[str], since: float) -> int:
    """Size of the largest ``*.incomplete`` file under ``folders`` modified at or after ``since`` (0 if none)."""
    best = 0
    for folder in folders:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                if not name.endswith(INCOMPLETE_SUFFIX):
                    continue
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:  # renamed into place between listing and stat
                    continue
                if st.st_mtime >= since:
                    best = max(best, st.st_size)
    return best


def run_polling(download: Callable[[], str], folders: list[str], total: int | None,
                progress: ProgressCallback | None) -> str:
    """``download()`` in a worker thread; meanwhile report the growing partial file every POLL_SECONDS.
    The worker's exception, if any, is raised here unchanged."""
    outcome: dict = {}

    def work():
        try:
            outcome["path"] = download()
        except BaseException as e:  # handed to the calling thread, which raises it
            outcome["error"] = e

    since = time.time() - 1.0  # file systems with coarse mtimes
    worker = threading.Thread(target=work, name="lune-hf-download", daemon=True)
    worker.start()
    last = 0
    if progress is not None and total:
        progress(0, total)
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if progress is None or not total:
            continue
        # never backwards: the partial file disappears when it is renamed into place
        done = min(max(incomplete_bytes(folders, since), last), total)
        if done != last:
            progress(done, total)
            last = done
    if "error" in outcome:
        raise outcome["error"]
    return outcome["path"]


# ------------------------------------------------------------------------------------------------ errors

def _http_library_roots() -> set[str]:
    """Top-level modules of the HTTP stack the installed huggingface_hub uses (requests before 1.0, httpx after),
    read from the bases of its HfHubHTTPError rather than assumed."""
    from huggingface_hub.utils import HfHubHTTPError

    roots = {cls.__module__.split(".")[0] for cls in HfHubHTTPError.__mro__}
    return (roots | {"requests", "urllib3", "httpx", "httpcore"}) - {"huggingface_hub", "builtins"}


def is_network_error(exc: BaseException) -> bool:
    """A failure to reach the Hub or an HTTP error answer (not a local disk problem, not a bug)."""
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    network = (ConnectionError, TimeoutError, socket.gaierror, socket.herror, HfHubHTTPError, OfflineModeIsEnabled,
               LocalEntryNotFoundError)  # raised by a download when the Hub is unreachable and nothing is cached
    if isinstance(exc, network):
        return True
    roots = _http_library_roots()
    return any(cls.__module__.split(".")[0] in roots for cls in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:200]


def download_failure(exc: BaseException, repo_id: str, filename: str, local_dir: str) -> LuneError:
    """The error to raise (``from exc``) for a failed download, by cause: network, local disk, or a bug."""
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if is_network_error(exc):
        return MissingComponentError(
            f"could not download {repo_id}/{filename} ({what}). Check the connection (and HF_TOKEN for a gated or "
            f"private repo), or place the file in {local_dir} yourself.")
    if isinstance(exc, OSError):
        return MissingComponentError(
            f"could not save {repo_id}/{filename} into {local_dir} ({what}). Check the free disk space and that the "
            "folder is writable, or place the file there yourself.")
    import huggingface_hub

    return LuneBugError(
        f"downloading {repo_id}/{filename} failed inside ComfyUI-Lune ({what}; huggingface_hub "
        f"{getattr(huggingface_hub, '__version__', '?')}). This is a bug in the pack, not a connection problem: "
        f"please report it with this message. Meanwhile place the file in {local_dir} yourself.")


# ------------------------------------------------------------------------------------------------ fetch

def _from_cache(repo_id: str, filename: str) -> str | None:
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):  # not cached (ValueError: older "not found" form)
        return None


def fetch(repo_id: str, filename: str, local_dir: str, progress: ProgressCallback | None = None,
          offline: bool | None = None) -> str:
    """Path of ``filename`` from ``repo_id``: from local_dir, the HF cache, or a fresh download (see module doc)."""
    target = os.path.join(local_dir, filename)
    if os.path.isfile(target):
        return target
    cached = _from_cache(repo_id, filename)
    if cached is not None:
        return cached
    import huggingface_hub

    if offline is None:
        offline = _offline_env() or bool(getattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False))
    if offline:
        raise MissingComponentError(
            f"{repo_id}/{filename} is not downloaded and Hugging Face is offline (HF_HUB_OFFLINE=1 or no network). "
            f"Download it on a connected machine into {local_dir} (or the HF cache) and try again.")
    download = huggingface_hub.hf_hub_download
    log.info("downloading %s/%s into %s", repo_id, filename, local_dir)
    try:
        if accepts_tqdm_class(download):
            tqdm_class = _progress_class(progress) if progress is not None else None
            path = download(repo_id, filename, local_dir=local_dir, tqdm_class=tqdm_class)
        else:
            total = remote_size(repo_id, filename) if progress is not None else None
            path = run_polling(lambda: download(repo_id, filename, local_dir=local_dir),
                               partial_download_dirs(repo_id, local_dir), total, progress)
    except Exception as e:
        raise download_failure(e, repo_id, filename, local_dir) from e
    if progress is not None:
        size = os.path.getsize(path)
        progress(size, size)
    return path
