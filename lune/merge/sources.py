"""Merge inputs, read one tensor at a time, under one key layout.

* ``.safetensors``: the header is validated (``lune.safe_read``) and each tensor is read with one
  ``readinto`` at its offset into a fresh tensor: nothing is memory-mapped, so resident memory is the tensors
  being combined, and a tensor handed out is never shared with another reader (the merge may not alter a source).
* ``.pt``/``.ckpt``/``.bin`` (weights-only pickles, ``lune.safe_read.load_pickle``: code-running pickles are
  refused): read once, their state dict (top level or under ``"state_dict"``) written to a temporary
  safetensors in the output folder, released, and then read like any safetensors. So at most one pickle is in
  memory at a time (a legacy ``.ckpt`` cannot be memory-mapped) and no pickle stays open.

Key layout. Each input's names are mapped to one canonical layout, the LDM single-file one:
wrapper prefixes (``module.``, ``_orig_mod.``, ``unet.``) are stripped; UNet tensors get ``model.diffusion_model.``
+ their LDM name — diffusers names through the map the caller passes (ComfyUI's ``unet_to_diffusers``, given by
the node: the library never imports ComfyUI), bare LDM UNet names by adding the prefix.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import LuneError, LuneFormatError, MissingComponentError
from ..safe_read import (SAFETENSORS, find_state_dict, load_pickle, read_safetensors_header, sniff,
                         strip_wrappers)
from ..safe_write import SAFETENSORS_DTYPES, element_size, write_safetensors

log = logging.getLogger("lune")

UNET_PREFIX = "model.diffusion_model."
LDM_UNET_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "out.", "label_emb.")
CLIP_VAE_PREFIXES = ("cond_stage_model.", "first_stage_model.", "taesd_encoder.", "taesd_decoder.")
PICKLE_CONTAINERS = ("state_dict",)


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # absolute file offset of the data

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self.dtype)


def canonical_names(keys, unet_names: Mapping[str, str] | None) -> dict[str, str]:
    """{canonical name: stored name} (module docstring). Two stored names for one canonical name are refused."""
    stripped = {k: strip_wrappers(k) for k in keys}
    has_prefixed_unet = any(s.startswith(UNET_PREFIX) for s in stripped.values())
    out: dict[str, str] = {}
    for stored, name in stripped.items():
        if not name.startswith(UNET_PREFIX):
            if unet_names and name in unet_names:
                name = UNET_PREFIX + unet_names[name]
            elif not has_prefixed_unet and name.startswith(LDM_UNET_ROOTS):
                name = UNET_PREFIX + name
        if name in out:
            raise LuneFormatError(f"{out[name]!r} and {stored!r} name the same tensor {name!r}; the file mixes key "
                                  "layouts. Re-save it with one layout.")
        out[name] = stored
    return out


class SafetensorsSource:
    """One merge input: ``info`` by canonical name, ``read(name)`` → a fresh tensor in the stored dtype."""

    def __init__(self, path: str, unet_names: Mapping[str, str] | None = None, label: str | None = None) -> None:
        self.path = path
        self.name = label or os.path.basename(path)
        header = read_safetensors_header(path)  # validates offsets: a truncated download fails here
        with open(path, "rb") as f:
            start = 8 + int.from_bytes(f.read(8), "little")
        self.metadata = dict(header.get("__metadata__") or {})
        names = canonical_names([k for k in header if k != "__metadata__"], unet_names)
        self.info: dict[str, TensorInfo] = {}
        for name, stored in names.items():
            entry = header[stored]
            dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise LuneFormatError(f"{path}: tensor {stored!r} has dtype {entry.get('dtype')!r}, which the merge "
                                      "cannot read. Convert the file to fp16/bf16/fp32 first.")
            self.info[name] = TensorInfo(dtype, tuple(entry["shape"]), start + entry["data_offsets"][0])
        self._file = open(path, "rb")
        self._lock = threading.Lock()

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor, a new one (never shared with another caller)."""
        info = self.info[name]
        return self.read_range(name, 0, info.numel).reshape(info.shape)

    def read_range(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor, as a new 1-D tensor in the stored dtype."""
        info = self.info[name]
        out = torch.empty(stop - start, dtype=info.dtype)
        size = element_size(info.dtype)
        want = (stop - start) * size
        got = 0
        if want:
            view = memoryview(out.view(torch.uint8).numpy())
            with self._lock:
                self._file.seek(info.offset + start * size)
                got = self._file.readinto(view)
        if got != want:
            raise LuneFormatError(f"{self.path}: tensor {name!r} is cut short ({got} of {want} bytes); the file "
                                  "changed or is damaged. Download it again.")
        return out

    def close(self) -> None:
        self._file.close()


class TemporaryCopies:
    """Temporary safetensors copies of pickle inputs, in one folder; all removed by ``close()``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.paths: list[str] = []

    def add(self, path: str, kind: str) -> str:
        obj = load_pickle(path, kind)
        found = find_state_dict(obj, path, PICKLE_CONTAINERS) if isinstance(obj, dict) else None
        if found is None:
            raise LuneFormatError(f"{path} holds no state dict of tensors at its top level or under 'state_dict' (a "
                                  "training state with optimizer entries?). Convert it with Lune Convert to "
                                  "Safetensors, or save the weights as a plain state dict, then merge that file.")
        tensors = {k: v.contiguous() for k, v in found[0].items()}
        del obj, found
        tmp = os.path.join(self.folder, f".lune-merge-input-{uuid.uuid4().hex}.safetensors")
        self.paths.append(tmp)
        log.info("merge: %s is a pickle: read once into a temporary safetensors copy", os.path.basename(path))
        write_safetensors(tmp, tensors, {})
        return tmp

    def close(self) -> None:
        for path in self.paths:
            if os.path.lexists(path):
                os.unlink(path)
        self.paths = []


def open_source(path: str, copies: TemporaryCopies, unet_names: Mapping[str, str] | None) -> SafetensorsSource:
    """Open a merge input by content (magic bytes), not by extension."""
    if not os.path.isfile(path):
        raise MissingComponentError(f"{path} does not exist (or is not a file). Check the name and the folder.")
    kind = sniff(path)
    if kind == SAFETENSORS:
        return SafetensorsSource(path, unet_names)
    try:
        return SafetensorsSource(copies.add(path, kind), unet_names, label=os.path.basename(path))
    except MemoryError:
        raise LuneError(f"{path} is a pickle too large to read into memory once for its temporary copy. Convert it "
                        "to .safetensors first (Lune Convert to Safetensors), then merge that file.") from None


def header_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Stored tensor names and shapes of a safetensors file ({} for other formats): what the node needs to build
    ComfyUI's UNet name map before the merge opens the files."""
    if not os.path.isfile(path) or sniff(path) != SAFETENSORS:
        return {}
    header = read_safetensors_header(path)
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
