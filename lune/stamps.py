"""Reload stamps: a string that changes whenever one of the given files is replaced, edited, created or removed.

ComfyUI re-runs a node when its ``IS_CHANGED`` result differs from the previous prompt's (``execution.py``,
``IsChangedCache``); the loaders return ``file_stamp(...)`` of every file they read.

Per path the stamp holds ``size, mtime_ns, st_dev, st_ino, ctime_ns`` (``os.stat``). Size and mtime alone miss a
copy that keeps both (``cp -p``, ``rsync -t``, ``shutil.copy2``): a copy placed by rename gets a new inode, a copy
written in place gets a new ctime (the kernel sets ctime on every write and on ``utime``; it cannot be set back by
the user). A missing path stamps as ``missing``, so a file that appears (a finished download) changes it too.
"""
from __future__ import annotations

import os

MISSING = "missing"


def _stat_text(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def file_stamp(*paths: str) -> str:
    """``"path=size:mtime_ns:dev:inode:ctime_ns|…"`` for each path in order (``missing`` for absent ones);
    duplicates are stamped once."""
    return "|".join(f"{p}={_stat_text(p)}" for p in dict.fromkeys(os.fspath(p) for p in paths))
