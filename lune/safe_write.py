"""New files only: write under a temporary name in the destination folder, fsync, then publish without overwriting.

One publish for every file the pack writes (merges, conversions):

1. the temporary file is created with ``os.open(O_CREAT | O_EXCL)`` and mode 0o666, so it gets the permissions
   of any new file (the process umask applies as usual; the umask is never changed — it is process-wide and
   ComfyUI serves from several threads) and works on Windows too (no ``os.fchmod``, which Windows lacks);
2. the data is flushed and ``os.fsync``-ed before the file gets its real name, so a crash never leaves a
   published file with missing data;
3. it is published with ``os.link(tmp, dst)``, which fails when ``dst`` exists (an existing file — even one that
   appeared while we wrote — is never replaced). File systems without hard links (FAT/exFAT, some network
   shares) get an exclusive create (``open(dst, "xb")``), a copy and an fsync instead;
4. the temporary name is removed in every case.

``SafetensorsStreamWriter`` writes a ``.safetensors`` file tensor by tensor through this publish. Format
(huggingface/safetensors README "Format"): u64 little-endian header length, the JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the tensor
bytes with no gaps. Tensors are laid out by decreasing element size (then name), and the header is padded to
8 bytes, so every tensor starts at a multiple of its element size (what a zero-copy reader needs).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import uuid
from contextlib import contextmanager
from typing import BinaryIO, Iterator, Mapping

import torch

from .errors import LuneError

log = logging.getLogger("lune")

HEADER_ALIGNMENT = 8
COPY_CHUNK = 1 << 24
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
TORCH_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def exists_error(dst: str, advice: str = "Choose another name, or delete the old file yourself.") -> LuneError:
    return LuneError(f"{dst} already exists; nothing was overwritten. {advice}")


def _create_temp(folder: str, prefix: str) -> tuple[str, BinaryIO]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{uuid.uuid4().hex}.partial")
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "wb")
    raise LuneError(f"Could not create a temporary file in {folder}.")


def _fsync_folder(folder: str) -> None:
    """Make the new name durable (POSIX; Windows has no directory handles to fsync and NTFS journals names)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: str, dst: str, advice: str | None = None) -> None:
    """Give the finished, fsync-ed ``tmp`` the name ``dst`` only if ``dst`` does not exist (see module doc)."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise exists_error(dst, *(advice,) if advice else ()) from None
    except OSError as e:
        log.debug("hard link %s → %s failed (%s); copying into an exclusively created file", tmp, dst, e)
        try:
            out = open(dst, "xb")
        except FileExistsError:
            raise exists_error(dst, *(advice,) if advice else ()) from None
        try:
            with out, open(tmp, "rb") as src:
                shutil.copyfileobj(src, out, COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(dst)
            raise
    _fsync_folder(os.path.dirname(os.path.abspath(dst)))


@contextmanager
def new_file(dst: str, prefix: str = ".lune-", advice: str | None = None) -> Iterator[BinaryIO]:
    """``with new_file(dst) as f: f.write(...)``: ``dst`` appears, complete and fsync-ed, only on a clean exit."""
    if os.path.lexists(dst):
        raise exists_error(dst, *(advice,) if advice else ())
    folder = os.path.dirname(os.path.abspath(dst))
    tmp, handle = _create_temp(folder, prefix)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        publish(tmp, dst, advice)
    finally:
        handle.close()
        if os.path.lexists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------------------ safetensors

def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def aligned_order(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[str]:
    """Keys by decreasing element size, then name: every offset is then a multiple of its tensor's element size."""
    return sorted(specs, key=lambda k: (-element_size(specs[k][0]), k))


def build_header(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], order: list[str],
                 metadata: Mapping[str, str]) -> bytes:
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in order:
        dtype, shape = specs[key]
        nbytes = element_size(dtype)
        for dim in shape:
            nbytes *= dim
        header[key] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor (little-endian machine), without a copy when it is contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """``with SafetensorsStreamWriter(dst, specs, metadata) as w: for key in w.order: w.write(key, tensor)``.

    ``specs`` maps every key to (dtype, shape) before the first byte; ``order`` is the dtype-aligned layout the
    tensors must be written in. On any error nothing appears at ``dst`` and the temporary file is removed.
    """

    def __init__(self, dst: str, specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str], advice: str | None = None) -> None:
        self.dst, self.specs, self.metadata, self.advice = dst, dict(specs), dict(metadata), advice
        self.order = aligned_order(self.specs)
        self._next = 0
        self._remaining: int | None = None
        self._context = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> "SafetensorsStreamWriter":
        self._context = new_file(self.dst, ".lune-write-", self.advice)
        self._file = self._context.__enter__()
        self._file.write(build_header(self.specs, self.order, self.metadata))
        return self

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """The whole tensor ``key`` (the next one in ``order``), with its declared dtype and shape."""
        spec = self.specs.get(key)
        if spec is None or tensor.dtype != spec[0] or tuple(tensor.shape) != tuple(spec[1]):
            raise RuntimeError(f"writer expected {key!r} {spec}, got {tensor.dtype} {tuple(tensor.shape)}")
        self.write_part(key, tensor)

    def write_part(self, key: str, tensor: torch.Tensor) -> None:
        """The next elements of tensor ``key`` in flattened order (a tensor may be written in several parts)."""
        expected = self.order[self._next] if self._next < len(self.order) else None
        if key != expected or tensor.dtype != self.specs[key][0]:
            raise RuntimeError(f"writer expected {expected!r}, got {key!r} {tensor.dtype}")
        if self._remaining is None:
            dtype, shape = self.specs[key]
            self._remaining = element_size(dtype) * math.prod(shape)
        data = tensor_bytes(tensor)
        if data.nbytes > self._remaining:
            raise RuntimeError(f"writer: {key!r} got {data.nbytes} bytes, {self._remaining} left")
        self._file.write(data)
        self._remaining -= data.nbytes
        if self._remaining == 0:
            self._next += 1
            self._remaining = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self._next != len(self.order):
            exc = RuntimeError(f"only {self._next} of {len(self.order)} tensors were written")
            self._context.__exit__(type(exc), exc, None)
            raise exc
        return bool(self._context.__exit__(exc_type, exc, tb))


def write_safetensors(dst: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                      advice: str | None = None) -> str:
    """Write ``tensors`` to the new file ``dst`` (refused if it exists), dtype-aligned, through ``publish``."""
    specs = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    with SafetensorsStreamWriter(dst, specs, metadata, advice) as writer:
        for key in writer.order:
            writer.write(key, tensors[key])
    return dst
