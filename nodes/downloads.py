"""``[download]`` entries of Load Lune Model and Load Lyra: one way to fetch, place, show progress and stamp.

Files go to ``models/<folder>/<owner>_<name>/`` (``paths.download_root``), or are used in place from the
Hugging Face cache; ``lune.hub.fetch`` does the lookup, the download and the error messages. Progress goes to
ComfyUI's progress bar of the running node: ``len(filenames)·100`` steps, file ``i`` filling ``[100·i, 100·(i+1)]``.
"""
from __future__ import annotations

import os
from typing import Sequence

from ..lune import hub
from ..lune.stamps import file_stamp
from . import paths
from .comfy_internals import ProgressBar

STEPS_PER_FILE = 100


def fetch(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> list[str]:
    """Local paths of ``filenames`` of ``repo_id`` (downloaded into ``download_root(repo_id, folder)`` if needed)."""
    local = paths.download_root(repo_id, folder)
    bar = ProgressBar(STEPS_PER_FILE * len(filenames))
    out = []
    for index, name in enumerate(filenames):
        base = STEPS_PER_FILE * index

        def report(done: int, total: int, base: int = base) -> None:
            bar.update_absolute(base + int(STEPS_PER_FILE * done / max(total, 1)))

        out.append(hub.fetch(repo_id, name, local, progress=report))
        bar.update_absolute(base + STEPS_PER_FILE)
    return out


def local_paths(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> list[str]:
    """Where ``fetch`` puts the files (whether or not they are there yet)."""
    local = paths.download_root(repo_id, folder)
    return [os.path.join(local, name) for name in filenames]


def stamp(repo_id: str, filenames: Sequence[str], folder: str = paths.DOWNLOADS_FOLDER) -> str:
    """Reload stamp of a download entry: its downloaded files (a finished, replaced or deleted download changes it)."""
    return file_stamp(*local_paths(repo_id, filenames, folder))
