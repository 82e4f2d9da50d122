"""Optional downloads from the Hugging Face Hub (never at import time; huggingface_hub imported lazily).

Order of lookup for ``fetch(repo, file, local_dir)``:
  1. ``local_dir/file`` already there (a previous download into ComfyUI's model folder) → use it;
  2. the standard HF cache (``~/.cache/huggingface`` / ``HF_HOME``), without network → use it in place;
  3. unless offline (``HF_HUB_OFFLINE=1`` or ``offline=True``): download into ``local_dir`` with progress.
Offline with nothing cached raises MissingComponentError saying where to put the file.

The download is resumable and can be cancelled, with every huggingface_hub from 0.20 on:
  * the bytes go to a partial file the pack owns, ``<local_dir>/.lune-partial/<file>.<etag>.part``, and are
    renamed to ``<local_dir>/<file>`` once complete. A run that finds a partial file of the same ETag asks the Hub
    for the rest only (HTTP Range, through huggingface_hub's own ``file_download.http_get(resume_size=…)``).
    huggingface_hub's ``hf_hub_download`` cannot be used for this: from 1.x on it writes to a process-unique
    temporary file and deletes it when the download fails or is interrupted (``_download_to_tmp_and_move``).
  * ``http_get`` writes every chunk through ``temp_file.write``; the pack hands it a file object that counts the
    bytes (progress) and raises DownloadStopped once the caller has asked it to stop (cancel). It runs in a worker
    thread; the calling thread polls ``cancelled()`` every POLL_SECONDS, so a cancel returns within POLL_SECONDS even
    when the network stalls (the worker then stops at its next chunk or read timeout, and the partial file stays).
  * the URL and headers are the ones ``hf_hub_download`` uses: ``get_hf_file_metadata(hf_hub_url(…))`` gives size,
    ETag and the final location; a location on another host (the LFS/Xet CDN, a signed URL) gets no
    ``authorization`` header.
  Progress is reported as ``(bytes done, bytes total)`` on the calling thread; the last report is ``(size, size)``.

Repositories without a fixed file name (``repo_files``): the Hub's file listing (``list_repo_files``) is saved as
``<local_dir>/.lune-repo-files.json``; offline, or when the Hub cannot be reached, that saved listing is used, and
without one the files already in ``local_dir``.

Errors: only network and HTTP failures say "check the connection"; a full disk or an unwritable folder says so;
anything else (``TypeError``, ``AttributeError``, …) is a bug and is reported as one (LuneBugError, chained).

APIs used and the huggingface_hub version that has them (all present in 0.20.0, the declared floor):
``hf_hub_download(local_files_only=)``, ``hf_hub_url``, ``get_hf_file_metadata`` (``.size``, ``.etag``,
``.location``), ``list_repo_files``, ``file_download.http_get(url, temp_file, resume_size=, headers=,
expected_size=)``, ``constants.HF_HUB_OFFLINE``, ``utils.{build_hf_headers, HfHubHTTPError,
LocalEntryNotFoundError, OfflineModeIsEnabled}``. The error classes come from ``huggingface_hub.utils``, which has
them from 0.20.0 to today: the newer ``huggingface_hub.errors`` module does not have them in 0.20–0.23.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from typing import Callable
from urllib.parse import urlparse

from .download_rules import FIXED, DownloadEntry
from .errors import LuneBugError, LuneError, MissingComponentError

log = logging.getLogger("lune")

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)
CancelCheck = Callable[[], bool]

#: How often (seconds) the calling thread reports progress and asks whether to cancel.
POLL_SECONDS = 0.25
#: How long a cancel waits for the worker to close the partial file before returning anyway.
STOP_WAIT_SECONDS = 1.0
PARTIAL_FOLDER = ".lune-partial"
PARTIAL_SUFFIX = ".part"
LISTING_FILE = ".lune-repo-files.json"
CANCELLED = "download cancelled; run again to resume"


class DownloadCancelled(LuneError):
    """The caller asked the download to stop; the partial file is kept for the next run."""


class DownloadStopped(Exception):
    """Raised inside the worker's ``write`` once the download was asked to stop (never leaves this module)."""


class _FromCaller(Exception):
    """Carries an exception raised by the caller's own ``progress``/``cancelled`` callback (e.g. ComfyUI's progress
    hook raising its interrupt) past the failure classification: it is re-raised unchanged, never called a bug."""

    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


def _call(callback, *args):
    try:
        return callback(*args)
    except BaseException as e:
        raise _FromCaller(e) from e


def offline_mode(offline: bool | None = None) -> bool:
    """``offline`` if given, else HF_HUB_OFFLINE from the environment or huggingface_hub's constants."""
    if offline is not None:
        return offline
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    import huggingface_hub

    return bool(getattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False))


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
            f"private repo), or place the file in {local_dir} yourself. Run again to resume: the part already "
            "downloaded is kept.")
    if isinstance(exc, OSError):
        return MissingComponentError(
            f"could not save {repo_id}/{filename} into {local_dir} ({what}). Check the free disk space and that the "
            "folder is writable, or place the file there yourself.")
    import huggingface_hub

    return LuneBugError(
        f"downloading {repo_id}/{filename} failed inside ComfyUI-Lune ({what}; huggingface_hub "
        f"{getattr(huggingface_hub, '__version__', '?')}). This is a bug in the pack, not a connection problem: "
        f"please report it with this message. Meanwhile place the file in {local_dir} yourself.")


# ------------------------------------------------------------------------------------------------ partial files

def partial_path(local_dir: str, filename: str, etag: str | None) -> str:
    """Where the bytes of ``filename`` collect until complete; the ETag in the name keeps a changed upstream file
    from being appended to an old partial one."""
    tag = re.sub(r"[^A-Za-z0-9]", "", etag or "")[:40] or "noetag"
    return os.path.join(local_dir, PARTIAL_FOLDER, *filename.split("/")[:-1],
                        f"{filename.split('/')[-1]}.{tag}{PARTIAL_SUFFIX}")


def cancel_message(repo_id: str, filename: str, local_dir: str) -> str:
    """What a cancelled download says (also used when ComfyUI's own interrupt check stops it)."""
    return (f"{repo_id}/{filename}: {CANCELLED} (the part already downloaded is kept in "
            f"{os.path.join(local_dir, PARTIAL_FOLDER)}).")


class _CountingWriter:
    """The ``temp_file`` handed to ``http_get``: writes through, counts bytes, stops when asked."""

    def __init__(self, raw, stop: threading.Event):
        self._raw = raw
        self._stop = stop
        self.written = 0

    def write(self, data) -> int:
        if self._stop.is_set():
            raise DownloadStopped()
        n = self._raw.write(data)
        self.written += len(data)
        return n

    def truncate(self, size=None):  # http_get restarts from zero when a server ignores the Range header
        out = self._raw.truncate(size)
        self.written = 0
        return out

    def __getattr__(self, name):  # tell, seek, flush, name, …
        return getattr(self._raw, name)


# Partial files being written by a worker of this process (a cancelled worker may still be finishing a read).
_ACTIVE: dict[str, threading.Thread] = {}
_ACTIVE_LOCK = threading.Lock()


def _wait_for_previous(partial: str, cancelled: CancelCheck | None, repo_id: str, filename: str,
                       local_dir: str) -> None:
    """A worker from a cancelled run may still hold ``partial`` until its next chunk: wait for it to let go."""
    while True:
        with _ACTIVE_LOCK:
            previous = _ACTIVE.get(partial)
        if previous is None or not previous.is_alive():
            return
        previous.join(POLL_SECONDS)
        if cancelled is not None and _call(cancelled):
            raise DownloadCancelled(cancel_message(repo_id, filename, local_dir))


def _request(repo_id: str, filename: str) -> tuple[str, dict, int | None, str | None]:
    """(URL to GET, headers, size or None, ETag or None), as ``hf_hub_download`` would request the file."""
    import huggingface_hub
    from huggingface_hub.utils import build_hf_headers

    url = huggingface_hub.hf_hub_url(repo_id, filename)
    meta = huggingface_hub.get_hf_file_metadata(url)
    total = int(meta.size) if getattr(meta, "size", None) else None
    location = getattr(meta, "location", None) or url
    headers = build_hf_headers()
    if urlparse(location).netloc != urlparse(url).netloc:  # a signed CDN URL: never send the token there
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return location, headers, total, getattr(meta, "etag", None)


def _resume_size(partial: str, total: int | None) -> int:
    """Bytes already in ``partial`` (0 if absent, or if it is longer than the file: not a prefix of it)."""
    resume = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if total is not None and resume > total:
        os.remove(partial)
        return 0
    return resume


def _run_worker(partial: str, location: str, headers: dict, resume: int, total: int | None,
                progress: ProgressCallback | None, cancelled: CancelCheck | None, message: str) -> None:
    """``http_get`` appending to ``partial`` in a worker thread; progress and cancel on the calling thread."""
    from huggingface_hub import file_download

    stop = threading.Event()
    outcome: dict = {}
    writer_box: list[_CountingWriter] = []

    def work():
        try:
            with open(partial, "ab") as raw:
                writer_box.append(_CountingWriter(raw, stop))
                if total is None or resume < total:
                    file_download.http_get(location, writer_box[0], resume_size=resume, headers=headers,
                                           expected_size=total)
        except BaseException as e:  # handed to the calling thread
            outcome["error"] = e

    worker = threading.Thread(target=work, name="lune-hf-download", daemon=True)
    with _ACTIVE_LOCK:
        _ACTIVE[partial] = worker
    worker.start()
    try:
        last = resume
        if progress is not None and total:
            _call(progress, resume, total)
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            done = min(resume + writer_box[0].written, total) if total and writer_box else last
            if progress is not None and total and done != last:
                _call(progress, done, total)
                last = done
            if cancelled is not None and worker.is_alive() and _call(cancelled):
                raise DownloadCancelled(message)
    except BaseException:
        stop.set()
        worker.join(STOP_WAIT_SECONDS)
        raise
    if "error" in outcome:
        raise outcome["error"]


def _download(repo_id: str, filename: str, local_dir: str, progress: ProgressCallback | None,
              cancelled: CancelCheck | None) -> str:
    location, headers, total, etag = _request(repo_id, filename)
    partial = partial_path(local_dir, filename, etag)
    target = os.path.join(local_dir, filename)
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    _wait_for_previous(partial, cancelled, repo_id, filename, local_dir)
    resume = _resume_size(partial, total)
    if resume:
        log.info("resuming %s/%s at %d of %s bytes", repo_id, filename, resume, total if total else "?")
    else:
        log.info("downloading %s/%s into %s", repo_id, filename, local_dir)
    _run_worker(partial, location, headers, resume, total, progress, cancelled,
                cancel_message(repo_id, filename, local_dir))
    size = os.path.getsize(partial)
    if total is not None and size != total:
        raise OSError(f"{partial} holds {size} bytes after the download, the Hub reports {total}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(partial, target)
    if progress is not None:
        _call(progress, size, size)
    return target


# ------------------------------------------------------------------------------------------------ fetch

def _from_cache(repo_id: str, filename: str) -> str | None:
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):  # not cached (ValueError: older "not found" form)
        return None


def fetch(repo_id: str, filename: str, local_dir: str, progress: ProgressCallback | None = None,
          offline: bool | None = None, cancelled: CancelCheck | None = None) -> str:
    """Path of ``filename`` from ``repo_id``: from local_dir, the HF cache, or a fresh or resumed download (see the
    module doc). ``cancelled()`` returning True stops it with DownloadCancelled; the partial file is kept."""
    target = os.path.join(local_dir, filename)
    if os.path.isfile(target):
        return target
    cached = _from_cache(repo_id, filename)
    if cached is not None:
        return cached
    if offline_mode(offline):
        raise MissingComponentError(
            f"{repo_id}/{filename} is not downloaded and Hugging Face is offline (HF_HUB_OFFLINE=1 or no network). "
            f"Download it on a connected machine into {local_dir} (or the HF cache) and try again.")
    try:
        return _download(repo_id, filename, local_dir, progress, cancelled)
    except DownloadCancelled:
        raise
    except _FromCaller as e:
        raise e.error from None
    except Exception as e:
        raise download_failure(e, repo_id, filename, local_dir) from e


# ------------------------------------------------------------------------------------------------ repo listings

def _listing_path(local_dir: str) -> str:
    return os.path.join(local_dir, LISTING_FILE)


def saved_listing(repo_id: str, local_dir: str) -> list[str] | None:
    """The file listing saved by the last successful ``repo_files`` of ``repo_id`` into ``local_dir``, or None."""
    try:
        with open(_listing_path(local_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("repo") != repo_id or not isinstance(data.get("files"), list):
        return None
    return [str(f) for f in data["files"]]


def local_listing(local_dir: str) -> list[str]:
    """Files already in ``local_dir`` (relative, ``/``-separated), the pack's own bookkeeping left out."""
    out = []
    for root, dirs, files in os.walk(local_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                out.append(os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/"))
    return sorted(out)


def repo_files(repo_id: str, local_dir: str, offline: bool | None = None) -> tuple[list[str], str]:
    """(files of ``repo_id``, where the list came from: "hub", "saved listing" or "local files").

    Online: the Hub's listing, saved for later offline use. Offline or unreachable: the saved listing, else the
    files already in ``local_dir``."""
    if not offline_mode(offline):
        import huggingface_hub

        try:
            files = sorted(huggingface_hub.list_repo_files(repo_id))
        except Exception as e:
            if not is_network_error(e):
                raise LuneBugError(f"listing {repo_id} failed inside ComfyUI-Lune ({type(e).__name__}: "
                                   f"{_first_line(e)}). This is a bug in the pack: please report it.") from e
            log.warning("could not list %s (%s: %s); using the saved listing", repo_id, type(e).__name__,
                        _first_line(e))
        else:
            os.makedirs(local_dir, exist_ok=True)
            with open(_listing_path(local_dir), "w", encoding="utf-8") as f:
                json.dump({"repo": repo_id, "files": files}, f, indent=1)
            return files, "hub"
    saved = saved_listing(repo_id, local_dir)
    if saved is not None:
        return saved, "saved listing"
    return (local_listing(local_dir) if os.path.isdir(local_dir) else []), "local files"


def entry_files(entry: DownloadEntry, local_dir: str, offline: bool | None = None) -> list[str]:
    """The files a ``[download]`` entry fetches into ``local_dir``, the one to load first.

    A fixed entry lists them. A rule entry keeps what its saved listing resolved to while those files are all in
    ``local_dir`` (no network, and a newer upload never replaces a finished download behind the user's back);
    otherwise it resolves against ``repo_files`` (the Hub, else the saved listing, else the local files)."""
    if entry.rule == FIXED:
        return list(entry.files)
    saved = saved_listing(entry.repo, local_dir)
    if saved is not None:
        try:
            files = entry.resolve(saved)
        except MissingComponentError:
            files = []
        if files and all(os.path.isfile(os.path.join(local_dir, f)) for f in files):
            return files
    listing, source = repo_files(entry.repo, local_dir, offline)
    files = entry.resolve(listing)
    log.info("%s: %s → %s (from the %s)", entry.label, entry.what or entry.rule, ", ".join(files), source)
    return files
