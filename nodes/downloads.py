"""``[download]`` entries of the pack's loaders: one way to resolve, fetch, place, show progress, cancel and stamp.

Files go to ``models/<folder>/<owner>_<name>/`` (``paths.download_root``), or are used in place from the
Hugging Face cache; ``lune.hub`` does the listing, the lookup, the (resumable) download and the error messages.
Progress goes to ComfyUI's progress bar of the running node: ``len(filenames)·100`` steps, file ``i`` filling
``[100·i, 100·(i+1)]``. Cancel (ComfyUI's interrupt flag, polled while the download runs, or the interrupt check
inside ComfyUI's progress hook) stops the download, keeps the partial file and ends the node the way ComfyUI ends an
interrupted prompt (InterruptProcessingException), saying "download cancelled; run again to resume".
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

from ..lune import hub
from ..lune.download_rules import DownloadEntry
from ..lune.errors import LuneError
from ..lune.stamps import file_stamp
from . import comfy_internals as comfy_api
from . import paths

log = logging.getLogger("lune")

STEPS_PER_FILE = 100


def entries_tooltip(folder: str, what: str = "[download] entries fetch the published weights") -> str:
    """The sentence every loader with ``[download]`` entries ends its tooltip with: where the files go and how a
    download behaves (resumable, cancellable, offline mode)."""
    return (f"{what} from Hugging Face into models/{folder}/<owner>_<repo>/ (resumable: Cancel keeps the part "
            "downloaded; honours HF_HUB_OFFLINE).")


def _fetch_one(repo_id: str, name: str, local: str, report) -> str:
    try:
        return hub.fetch(repo_id, name, local, progress=report, cancelled=comfy_api.processing_interrupted)
    except hub.DownloadCancelled as e:
        log.warning("%s", e)
        raise comfy_api.InterruptProcessingException(str(e)) from e
    except comfy_api.InterruptProcessingException as e:  # raised by ComfyUI's progress hook on Cancel
        message = hub.cancel_message(repo_id, name, local)
        log.warning("%s", message)
        raise comfy_api.InterruptProcessingException(message) from e


def fetch(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> list[str]:
    """Local paths of ``filenames`` of ``repo_id`` (downloaded into ``download_root(repo_id, folder)`` if needed)."""
    local = paths.download_root(repo_id, folder)
    bar = comfy_api.ProgressBar(STEPS_PER_FILE * len(filenames))
    out = []
    for index, name in enumerate(filenames):
        base = STEPS_PER_FILE * index

        def report(done: int, total: int, base: int = base) -> None:
            bar.update_absolute(base + int(STEPS_PER_FILE * done / max(total, 1)))

        out.append(_fetch_one(repo_id, name, local, report))
        bar.update_absolute(base + STEPS_PER_FILE)
    return out


def fetch_entry(entry: DownloadEntry) -> list[str]:
    """Local paths of the files of a ``[download]`` entry, the one to load first (resolved, then fetched)."""
    local = paths.download_root(entry.repo, entry.folder)
    files = hub.entry_files(entry, local)
    if entry.licence and not all(os.path.isfile(os.path.join(local, f)) for f in files):
        log.warning("%s: the weights of %s are licensed %s. Downloading %s.", entry.label, entry.repo, entry.licence,
                    ", ".join(files))
    return fetch(entry.repo, files, entry.folder)


def local_paths(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> list[str]:
    """Where ``fetch`` puts the files (whether or not they are there yet)."""
    local = paths.download_root(repo_id, folder)
    return [os.path.join(local, name) for name in filenames]


def stamp(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> str:
    """Reload stamp of downloaded files (a finished, replaced or deleted download changes it)."""
    return file_stamp(*local_paths(repo_id, filenames, folder))


def entry_stamp(entry: DownloadEntry) -> str:
    """Reload stamp of an entry's files, resolved without the network (the label while nothing is resolved)."""
    try:
        files = hub.entry_files(entry, paths.download_root(entry.repo, entry.folder), offline=True)
    except LuneError:
        return entry.label
    return stamp(entry.repo, files, entry.folder)


def choice_files(name: str, entries: Sequence[DownloadEntry], find: Callable[[str], str | None],
                 missing: LuneError) -> list[str]:
    """The files behind a dropdown choice: a ``[download]`` entry's (fetched now, the one to load first) or the one
    file ``find`` locates; raises ``missing`` (naming the fix) when it is neither."""
    entry = paths.find_entry(name, entries)
    if entry is not None:
        return fetch_entry(entry)
    path = find(name)
    if path is None:
        raise missing
    return [path]


def choice_stamp(name: str, entries: Sequence[DownloadEntry], find: Callable[[str], str | None],
                 companions: Callable[[str], Sequence[str]] = lambda path: ()) -> str:
    """Reload stamp of a dropdown choice: its entry's files, or the file ``find`` locates and its ``companions``
    (config files read beside it); the name itself when it is neither."""
    entry = paths.find_entry(name, entries)
    if entry is not None:
        return entry_stamp(entry)
    path = find(name)
    return file_stamp(path, *companions(path)) if path else name
