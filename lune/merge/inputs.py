"""Model lists as users type them: one file name or glob per line, relative to a models folder.

Lines are stripped; empty lines and lines starting with ``#`` are ignored. A line may not be absolute or climb
out of the folder (``..``): it names files *inside* the models folder. Globs (``*``, ``?``, ``[…]``, ``**``)
expand in name order; a glob that matches nothing, or a name that does not exist, is an error. The base file
is left out wherever it matches; duplicates are kept once, first occurrence wins.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

from ..errors import LuneError, MissingComponentError

OUTPUT_SUFFIX = ".safetensors"


def _check_relative(line: str) -> str:
    normalized = os.path.normpath(line.replace("\\", "/"))
    if os.path.isabs(line) or os.path.isabs(normalized) or normalized == ".." or normalized.startswith("../"):
        raise LuneError(f"models: {line!r} points outside the models folder. Write names relative to "
                        "models/checkpoints (e.g. 'merges/*.safetensors'); copy or link other files there first.")
    return normalized


def _matches(pattern: str, roots: Sequence[str]) -> list[str]:
    found: list[str] = []
    for root in roots:
        if glob.has_magic(pattern):
            hits = sorted(glob.glob(os.path.join(glob.escape(root), pattern), recursive=True))
            found += [h for h in hits if os.path.isfile(h)]
        elif os.path.isfile(os.path.join(root, pattern)):
            found.append(os.path.join(root, pattern))
            break
    return found


def resolve_model_list(text: str, roots: Sequence[str], base_path: str) -> list[str]:
    """Absolute paths of the models listed in ``text`` (see module docstring), base excluded."""
    paths: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern = _check_relative(line)
        hits = _matches(pattern, roots)
        if not hits:
            kind = "matches no file" if glob.has_magic(pattern) else "was not found"
            raise MissingComponentError(f"models: {line!r} {kind} in models/checkpoints. Check the spelling "
                                        "(names are relative to that folder) and press R to refresh the lists.")
        for path in hits:
            real = os.path.realpath(path)
            if real in seen or os.path.samefile(path, base_path):
                continue
            seen.add(real)
            paths.append(path)
    if not paths:
        raise LuneError("models: no model to merge besides the base. List one file name or glob per line, "
                        "relative to models/checkpoints.")
    return paths


def output_path(name: str, folder: str) -> str:
    """``folder/<name>.safetensors`` for a plain file name; refuses folders and '..'."""
    stem = name.strip()
    if stem.endswith(OUTPUT_SUFFIX):
        stem = stem[: -len(OUTPUT_SUFFIX)]
    if not stem or "/" in stem or "\\" in stem or stem in (".", "..") or stem.startswith("."):
        raise LuneError(f"output_name {name!r} is not a plain file name. Use a name like 'my_merge' (written as "
                        "models/checkpoints/my_merge.safetensors).")
    # an existing file is judged by the merge: reused when it holds the same recipe, refused otherwise
    return os.path.join(folder, stem + OUTPUT_SUFFIX)
