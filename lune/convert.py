"""Convert a training-state ``.pt`` (or any readable Lune file) once into a plain UNet safetensors beside it.

The output holds the UNet only, under the key names it was stored with (LDM ``input_blocks.…`` or diffusers
``down_blocks.…``; ComfyUI's stock UNETLoader reads both for SD1.5), keeps the source dtype unless told otherwise
and records in its metadata the variant (``lune.variant``) and, as provenance, the source file and format
(``lune.source_file``, ``lune.source_format``). It is written to a temporary file in the same folder and
published with ``os.link(tmp, dst)``, which fails when ``dst`` exists: an existing file is never overwritten,
even one that appears while the conversion runs.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

import torch

from .errors import LuneError
from .formats import read_checkpoint
from .variants import UNNAMED, VARIANT_METADATA_KEY, detect_variant, get_variant

log = logging.getLogger("lune")

SUFFIX = ".unet.safetensors"
AUTO = "auto"


def default_output_path(src: str) -> str:
    root = src[:-len(os.path.splitext(src)[1])] if os.path.splitext(src)[1] else src
    return root + SUFFIX


def _exists_error(dst: str) -> LuneError:
    return LuneError(f"{dst} already exists; nothing was overwritten. Load that file instead, or delete it "
                     "first if you want to convert again.")


def publish_without_overwrite(tmp: str, dst: str) -> None:
    """Make the finished ``tmp`` visible as ``dst`` only if ``dst`` does not exist, atomically.

    A hard link is created in one step and fails with FileExistsError when ``dst`` exists. File systems without
    hard links (FAT/exFAT) get an exclusive create (``O_EXCL``) and a copy instead.
    """
    try:
        os.link(tmp, dst)
        return
    except FileExistsError:
        raise _exists_error(dst) from None
    except OSError as e:
        log.debug("hard link %s → %s failed (%s); copying into an exclusively created file", tmp, dst, e)
    try:
        out = open(dst, "xb")
    except FileExistsError:
        raise _exists_error(dst) from None
    try:
        with out, open(tmp, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 24)
    except BaseException:
        os.unlink(dst)
        raise


def convert_to_safetensors(src: str, dst: str | None = None, dtype: torch.dtype | None = None,
                           variant: str | None = AUTO, listed_name: str | None = None) -> str:
    """Write the UNet of ``src`` to ``dst`` (default ``<src stem>.unet.safetensors``); returns ``dst``.

    ``variant``: a variant name to record, ``"auto"`` to record the one the loader's auto mode picks for ``src``
    (so the converted file loads as its source did; nothing is recorded when auto finds no name), or None to
    record none. ``listed_name`` is ``src`` relative to its models folder (what auto mode reads); default: the
    file name alone.
    """
    import safetensors.torch

    dst = dst or default_output_path(src)
    if os.path.exists(dst):
        raise _exists_error(dst)
    ckpt = read_checkpoint(src)
    metadata = {"lune.source_file": os.path.basename(src), "lune.source_format": ckpt.layout}
    if variant == AUTO:
        chosen, reason = detect_variant(listed_name or os.path.basename(src), ckpt.metadata)
        log.info("convert: %s is variant %s (%s)", os.path.basename(src), chosen.name, reason)
        if chosen is not UNNAMED:
            metadata[VARIANT_METADATA_KEY] = chosen.name
    elif variant is not None:
        metadata[VARIANT_METADATA_KEY] = get_variant(variant).name
    unet = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in ckpt.unet.items()}
    del ckpt
    fd, tmp = tempfile.mkstemp(prefix=".lune-convert-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(dst)))
    os.close(fd)
    try:
        safetensors.torch.save_file(unet, tmp, metadata=metadata)
        publish_without_overwrite(tmp, dst)
    finally:
        os.unlink(tmp)
    log.info("converted %s (%s) → %s", src, metadata["lune.source_format"], dst)
    return dst
