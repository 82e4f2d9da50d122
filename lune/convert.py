"""Convert a training-state ``.pt`` (or any readable Lune file) once into a plain UNet safetensors beside it.

The output holds the LDM-layout UNet only (keys ``input_blocks.…``, loadable by this pack and by ComfyUI's stock
UNETLoader), keeps the source dtype unless told otherwise, records its source in the metadata, and is written
to a temporary name then renamed — an existing file is never overwritten.
"""
from __future__ import annotations

import logging
import os
import tempfile

import torch

from .errors import LuneError
from .formats import read_checkpoint

log = logging.getLogger("lune")

SUFFIX = ".unet.safetensors"


def default_output_path(src: str) -> str:
    root = src[:-len(os.path.splitext(src)[1])] if os.path.splitext(src)[1] else src
    return root + SUFFIX


def convert_to_safetensors(src: str, dst: str | None = None, dtype: torch.dtype | None = None) -> str:
    """Write the UNet of ``src`` to ``dst`` (default ``<src stem>.unet.safetensors``); returns ``dst``."""
    import safetensors.torch

    dst = dst or default_output_path(src)
    if os.path.exists(dst):
        raise LuneError(f"{dst} already exists; nothing was overwritten. Load that file instead, or delete it "
                        "first if you want to convert again.")
    ckpt = read_checkpoint(src)
    unet = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in ckpt.unet.items()}
    metadata = {"lune.source": os.path.basename(src), "lune.layout": "ldm_unet", "lune.source_layout": ckpt.layout}
    folder = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".lune-convert-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        safetensors.torch.save_file(unet, tmp, metadata=metadata)
        if os.path.exists(dst):  # appeared while we were writing
            raise LuneError(f"{dst} appeared during conversion; nothing was overwritten.")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("converted %s (%s) → %s", src, ckpt.layout, dst)
    return dst
