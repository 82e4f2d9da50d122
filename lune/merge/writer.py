"""Write a ``.safetensors`` file tensor by tensor, and publish it without ever replacing an existing file.

Format (huggingface/safetensors README): u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`` (offsets relative to
the data block, which follows the header with no gaps), then the raw little-endian tensor bytes. Every tensor's
dtype and shape are known before the first byte is written (the merge keeps the base's), so the header goes
first and each tensor is appended as soon as it is computed: memory stays at one tensor.

The file is written under a hidden temporary name in the destination folder and published with ``os.link``,
which fails if the destination exists: a concurrent writer or a file created meanwhile is never replaced.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile

import torch

from ..errors import LuneError
from .sources import TORCH_TO_SAFETENSORS, TensorInfo

HEADER_ALIGNMENT = 8  # the reference writer pads the JSON with spaces so the data block starts 8-aligned


def build_header(infos: dict[str, TensorInfo], metadata: dict[str, str]) -> bytes:
    """The length-prefixed JSON header for tensors laid out in the order of ``infos``."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, info in infos.items():
        header[key] = {"dtype": TORCH_TO_SAFETENSORS[info.dtype], "shape": list(info.shape),
                       "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor (little-endian machine), without a copy when it is contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """``with SafetensorsStreamWriter(dst, infos, metadata) as w: w.write(key, tensor)`` in ``infos`` order.

    On a clean exit every tensor must have been written; the file then appears at ``dst``. On any error the
    temporary file is removed and ``dst`` is untouched.
    """

    def __init__(self, dst: str, infos: dict[str, TensorInfo], metadata: dict[str, str]) -> None:
        self.dst = dst
        self.infos = infos
        self.metadata = metadata
        self._order = list(infos)
        self._next = 0
        self._tmp: str | None = None
        self._file = None

    def __enter__(self) -> "SafetensorsStreamWriter":
        if os.path.lexists(self.dst):
            raise LuneError(f"{self.dst} already exists; nothing was overwritten. Choose another output name.")
        folder = os.path.dirname(os.path.abspath(self.dst))
        fd, self._tmp = tempfile.mkstemp(prefix=".lune-merge-", suffix=".partial", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # a model file like any other, not mkstemp's private 0600
        self._file = os.fdopen(fd, "wb")
        self._file.write(build_header(self.infos, self.metadata))
        return self

    def write(self, key: str, tensor: torch.Tensor) -> None:
        expected = self._order[self._next] if self._next < len(self._order) else None
        info = self.infos.get(key)
        if key != expected or info is None or tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
            raise RuntimeError(f"writer expected {expected!r} {info}, got {key!r} {tensor.dtype} "
                               f"{tuple(tensor.shape)}")
        self._file.write(tensor_bytes(tensor))
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._file.close()
            if exc_type is None:
                if self._next != len(self._order):
                    raise RuntimeError(f"only {self._next} of {len(self._order)} tensors were written")
                self._publish()
        finally:
            if self._tmp and os.path.exists(self._tmp):
                os.unlink(self._tmp)

    def _publish(self) -> None:
        try:
            os.link(self._tmp, self.dst)  # atomic, and refuses to replace an existing name
        except FileExistsError:
            raise LuneError(f"{self.dst} appeared while the merge was running; nothing was overwritten. "
                            "Choose another output name.") from None
        except OSError:  # a file system without hard links: exclusive create, then a copy into it
            self._copy_exclusive()

    def _copy_exclusive(self) -> None:
        try:
            fd = os.open(self.dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise LuneError(f"{self.dst} appeared while the merge was running; nothing was overwritten.") from None
        try:
            with os.fdopen(fd, "wb") as out, open(self._tmp, "rb") as src:
                while chunk := src.read(1 << 24):
                    out.write(chunk)
        except BaseException:
            os.unlink(self.dst)
            raise
