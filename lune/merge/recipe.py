"""The recipe a merge records in its output, and what an existing output with the same name means.

Recipe (JSON in the output's ``__metadata__["lune.merge.recipe"]``): the method, the parameters it reads
(``methods.METHODS[...].params``), and for the base, every model (in order) and the CLIP/VAE donor, the file
name, size and a content stamp — CRC-32 of the whole file (zlib; ~1 GB/s, files hashed two at a time and
remembered per (path, size, mtime, inode, ctime) while the process runs). A CRC is not a cryptographic hash: it
tells a re-run "these are the same bytes", it does not defend against a crafted collision.

Re-running a merge: an output that exists with the same recipe is reused as it is (no merge); one with another
recipe — or that is not a Lune merge — is refused, naming what differs; nothing is ever overwritten.
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from ..errors import LuneError
from ..safe_read import SAFETENSORS, read_safetensors_header, sniff
from ..stamps import file_stamp
from .methods import MergeParams

RECIPE_METADATA_KEY = "lune.merge.recipe"
RECIPE_FORMAT = 2
_CHUNK = 1 << 24
_stamps: dict[str, str] = {}
_lock = threading.Lock()


def content_stamp(path: str) -> str:
    """``crc32:<8 hex>`` of the file's bytes (cached while the file's stat is unchanged)."""
    key = file_stamp(path)
    with _lock:
        if key in _stamps:
            return _stamps[key]
    crc = 0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
    stamp = f"crc32:{crc:08x}"
    with _lock:
        _stamps[key] = stamp
    return stamp


def describe_files(paths: Sequence[str]) -> list[dict]:
    with ThreadPoolExecutor(max_workers=2) as pool:  # zlib releases the GIL: two files at once
        stamps = list(pool.map(content_stamp, paths))
    return [{"name": os.path.basename(p), "size": os.path.getsize(p), "stamp": s} for p, s in zip(paths, stamps)]


def build_recipe(params: MergeParams, base: str, models: Sequence[str], clip_vae_from: str | None) -> dict:
    files = describe_files([base, *models, *([clip_vae_from] if clip_vae_from else [])])
    return {"format": RECIPE_FORMAT, "method": params.method, "params": params.used(), "base": files[0],
            "models": files[1:1 + len(models)], "clip_vae_from": files[-1] if clip_vae_from else None}


def differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two recipes (empty when they are the same)."""
    out = []
    for field in ("format", "method", "params"):
        if old.get(field) != new.get(field):
            out.append(f"{field}: {json.dumps(old.get(field))} there, {json.dumps(new.get(field))} now")
    for field in ("base", "clip_vae_from"):
        if old.get(field) != new.get(field):
            out.append(f"{field}: {_file(old.get(field))} there, {_file(new.get(field))} now")
    old_models, new_models = old.get("models") or [], new.get("models") or []
    if len(old_models) != len(new_models):
        out.append(f"models: {len(old_models)} there, {len(new_models)} now")
    for i, (a, b) in enumerate(zip(old_models, new_models), 1):
        if a != b:
            out.append(f"model {i}: {_file(a)} there, {_file(b)} now")
    return out


def _file(entry) -> str:
    if not entry:
        return "none"
    return f"{entry.get('name')} ({entry.get('size')} bytes, {entry.get('stamp')})"


def recorded_recipe(path: str) -> dict | None:
    """The recipe stored in an existing file, or None when it holds none (not a Lune merge of this format)."""
    try:
        if sniff(path) != SAFETENSORS:
            return None
        meta = read_safetensors_header(path).get("__metadata__") or {}
        return json.loads(meta[RECIPE_METADATA_KEY])
    except (LuneError, KeyError, ValueError, OSError):
        return None


def reusable(output: str, recipe: dict) -> bool:
    """True when ``output`` exists and holds this recipe; False when it does not exist; LuneError otherwise."""
    if not os.path.lexists(output):
        return False
    old = recorded_recipe(output)
    if old is None:
        raise LuneError(f"{output} already exists and is not a Lune merge (it records no merge recipe); nothing was "
                        "overwritten. Choose another output name.")
    changed = differences(old, recipe)
    if changed:
        raise LuneError(f"{output} already exists with another recipe; nothing was overwritten. Differences: "
                        + "; ".join(changed) + ". Choose another output name to merge this recipe, or restore "
                        "the settings and inputs to reuse the existing file.")
    return True
