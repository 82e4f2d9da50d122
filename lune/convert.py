"""Convert a training-state ``.pt`` (or any readable Lune file) once into a plain UNet safetensors beside it.

The output holds the UNet only, under the key names it was stored with (LDM ``input_blocks.…`` or diffusers
``down_blocks.…``; ComfyUI's stock UNETLoader reads both for SD1.5), keeps the source dtype unless told otherwise
and records in its metadata the variant (``lune.variant``) and, as provenance, the source file and format
(``lune.source_file``, ``lune.source_format``). It is written through ``lune.safe_write`` (temporary file in the
same folder, fsync, publish by hard link or exclusive create): an existing file is never overwritten, even one
that appears while the conversion runs.
"""
from __future__ import annotations

import logging
import os

import torch

from .formats import read_checkpoint
from .safe_write import exists_error, write_safetensors
from .variants import UNNAMED, VARIANT_METADATA_KEY, detect_variant, get_variant

log = logging.getLogger("lune")

SUFFIX = ".unet.safetensors"
AUTO = "auto"


def default_output_path(src: str) -> str:
    root = src[:-len(os.path.splitext(src)[1])] if os.path.splitext(src)[1] else src
    return root + SUFFIX


CONVERT_AGAIN = "Load that file instead, or delete it first if you want to convert again."


def convert_to_safetensors(src: str, dst: str | None = None, dtype: torch.dtype | None = None,
                           variant: str | None = AUTO, listed_name: str | None = None) -> str:
    """Write the UNet of ``src`` to ``dst`` (default ``<src stem>.unet.safetensors``); returns ``dst``.

    ``variant``: a variant name to record, ``"auto"`` to record the one the loader's auto mode picks for ``src``
    (so the converted file loads as its source did; nothing is recorded when auto finds no name), or None to
    record none. ``listed_name`` is ``src`` relative to its models folder (what auto mode reads); default: the
    file name alone.
    """
    dst = dst or default_output_path(src)
    if os.path.lexists(dst):
        raise exists_error(dst, CONVERT_AGAIN)
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
    write_safetensors(dst, unet, metadata, CONVERT_AGAIN)
    log.info("converted %s (%s) → %s", src, metadata["lune.source_format"], dst)
    return dst
