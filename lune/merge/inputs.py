"""Model lists as users type them: one file name or glob per line, relative to a models folder.

Lines are stripped; empty lines and lines starting with ``#`` are ignored. A line names files *inside* the models
folder, under both POSIX and Windows rules whatever the platform (a workflow travels between them): it may not be
absolute (``/x``, ``\\x``, ``C:\\x``, ``\\\\server\\share``), drive-relative (``C:x``), contain a ``..`` component
(with ``/`` or ``\\``), a ``:`` (Windows drive or alternate data stream) or a Windows reserved device name (``CON``,
``PRN``, ``AUX``, ``NUL``, ``COM0``–``COM9``, ``LPT0``–``LPT9``, with or without an extension; Microsoft, "Naming
Files, Paths, and Namespaces"). Every file found is then checked to lie inside the folder by path, with
``os.path.commonpath`` on the folder's resolved real path (symlinks the user placed inside the folder are
followed, as ComfyUI's own model lists follow them). Globs (``*``, ``?``, ``[…]``, ``**``) expand in name order;
a glob that matches nothing, or a name that does not exist, is an error. The base file is left out wherever it
matches (compared by real path); duplicates are kept once, first occurrence wins.
"""
from __future__ import annotations

import glob
import ntpath
import os
import posixpath
import re
from typing import Sequence

from ..errors import LuneError, MissingComponentError

OUTPUT_SUFFIX = ".safetensors"
# CON, PRN, AUX, NUL, COM0-9, LPT0-9 (also with superscript digits), with any extension; Windows ignores trailing
# dots and spaces when it compares names
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$", re.IGNORECASE)
_OUTSIDE = ("points outside the models folder. Write names relative to models/checkpoints (e.g. "
            "'merges/*.safetensors'); copy or link other files there first.")


def reserved_name(component: str) -> bool:
    """True for a Windows reserved device name (``NUL``, ``com1.safetensors``, ``Aux .txt``...): the part before the
    first dot, trailing dots and spaces ignored as Windows ignores them."""
    return bool(_RESERVED.match(component.rstrip(". ").split(".", 1)[0].rstrip(" ")))


def check_relative(line: str) -> str:
    """``line`` as a '/'-separated relative name inside the folder, or LuneError (module docstring)."""
    for pathmod in (posixpath, ntpath):
        if pathmod.isabs(line) or pathmod.splitdrive(line)[0]:
            raise LuneError(f"models: {line!r} {_OUTSIDE}")
    parts = [p for p in re.split(r"[/\\]", line) if p not in ("", ".")]
    if ".." in parts or ":" in line:
        raise LuneError(f"models: {line!r} {_OUTSIDE}")
    for part in parts:
        if reserved_name(part):
            raise LuneError(f"models: {line!r} uses the Windows device name {part!r}, which is not a file. Rename "
                            "the file.")
    if not parts:
        raise LuneError(f"models: {line!r} names no file. Write a file name or glob relative to models/checkpoints.")
    return "/".join(parts)


def contained(path: str, folder: str, pathmod=os.path) -> bool:
    """True when ``path`` lies inside ``folder`` (both absolute, already resolved by the caller)."""
    try:
        return pathmod.commonpath([pathmod.normcase(path), pathmod.normcase(folder)]) == pathmod.normcase(folder)
    except ValueError:  # different drives (Windows) or mixed absolute/relative
        return False


def _matches(pattern: str, roots: Sequence[str]) -> list[str]:
    found: list[str] = []
    for folder in roots:
        root = os.path.realpath(folder)
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
        pattern = check_relative(line)
        hits = _matches(pattern, roots)
        if not hits:
            kind = "matches no file" if glob.has_magic(pattern) else "was not found"
            raise MissingComponentError(f"models: {line!r} {kind} in models/checkpoints. Check the spelling "
                                        "(names are relative to that folder) and press R to refresh the lists.")
        for path in hits:
            if not any(contained(os.path.normpath(path), os.path.realpath(root)) for root in roots):
                raise LuneError(f"models: {line!r} {_OUTSIDE}")
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
    if (not stem or any(c in stem for c in '/\\:*?"<>|') or stem.startswith(".") or stem.rstrip(". ") != stem
            or reserved_name(stem)):
        raise LuneError(f"output_name {name!r} is not a plain file name. Use a name like 'my_merge' (written as "
                        "models/checkpoints/my_merge.safetensors).")
    # an existing file is judged by the merge: reused when it holds the same recipe, refused otherwise
    return os.path.join(folder, stem + OUTPUT_SUFFIX)
