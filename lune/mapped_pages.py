"""Give back the RAM held by memory-mapped (file-backed) tensors once their values have been copied elsewhere.

Why: safetensors' ``safe_open`` (0.4 and later) and ``torch.load(..., mmap=True)`` return tensors that are views of
ONE private mapping of the whole file (``UntypedStorage.from_file(..., shared=False)``). Every page that is read
counts in the process's resident set until the mapping goes away, and it only goes away when the last tensor of
the file is freed. Copying a checkpoint into a freshly built model therefore keeps file pages + model resident
(≈ 2× for fp32 weights) even though the file pages are no longer needed.

How: ``madvise(addr, len, MADV_DONTNEED)`` (Linux madvise(2)) on a private file mapping removes those pages from
this process. It is not destructive for pages that still hold the file's bytes: a later access reads them from
the file (usually from the page cache) again. It WOULD discard a page the process wrote to (a copy-on-write
page of a private mapping) or a swapped-out anonymous page, so every page is checked first in
``/proc/self/pagemap`` (Linux Documentation/admin-guide/mm/pagemap.rst: bit 63 present, bit 62 swapped, bit 61
file page or shared anonymous) and a range is released only when every present page is a file page and none is
swapped. Only whole pages strictly inside a tensor's bytes are released, so neighbouring tensors never lose a page.

Limits: Linux only (``/proc/self/maps``, ``/proc/self/pagemap``, glibc ``madvise``); elsewhere every call is a
no-op that returns 0 (Windows does not count a mapped view's pages against the commit limit, and trims them under
pressure). Tensors in anonymous memory (a fully read ``.ckpt``, a converted copy) are never touched: they are
freed by dropping their last reference.
"""
from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import logging
import mmap
import sys
from typing import Iterable, NamedTuple

import numpy as np
import torch

log = logging.getLogger("lune")

MADV_DONTNEED = 4  # <asm-generic/mman-common.h>
PAGE_SIZE = mmap.PAGESIZE
PAGEMAP_ENTRY_BYTES = 8
PAGEMAP_PRESENT = np.uint64(1 << 63)
PAGEMAP_SWAPPED = np.uint64(1 << 62)
PAGEMAP_FILE = np.uint64(1 << 61)


class FileMapping(NamedTuple):
    start: int
    end: int
    path: str


# /proc/self/maps is long in a ComfyUI process (thousands of lines); it is parsed again only when a tensor lies
# outside every known file mapping. A stale entry cannot cause harm: the pagemap check refuses anonymous pages.
_mappings_cache: list[FileMapping] = []


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _libc_madvise()


def supported() -> bool:
    """True where pages can be given back (Linux with a readable /proc/self/pagemap)."""
    if _MADVISE is None:
        return False
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.read(PAGEMAP_ENTRY_BYTES)
    except OSError:
        return False
    return True


def file_mappings() -> list[FileMapping]:
    """This process's file-backed mappings (inode ≠ 0), sorted by start address, from /proc/self/maps."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[4] == "0":
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append(FileMapping(lo, hi, fields[5].strip()))
    out.sort()
    return out


def _inner_page_range(tensor: torch.Tensor) -> tuple[int, int] | None:
    """[start, end) of the whole pages lying strictly inside a contiguous CPU tensor's bytes, or None."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.numel() == 0:
        return None
    first = tensor.data_ptr()
    last = first + tensor.numel() * tensor.element_size()
    start = -(-first // PAGE_SIZE) * PAGE_SIZE
    end = last // PAGE_SIZE * PAGE_SIZE
    return (start, end) if end > start else None


def _containing(mappings: list[FileMapping], starts: list[int], lo: int, hi: int) -> FileMapping | None:
    i = bisect.bisect_right(starts, lo) - 1
    if i >= 0 and mappings[i].start <= lo and hi <= mappings[i].end:
        return mappings[i]
    return None


def _only_clean_file_pages(pagemap, start: int, end: int) -> bool:
    """Every present page of [start, end) is a file page and none is swapped out (see module docstring)."""
    pagemap.seek(start // PAGE_SIZE * PAGEMAP_ENTRY_BYTES)
    count = (end - start) // PAGE_SIZE
    entries = np.frombuffer(pagemap.read(count * PAGEMAP_ENTRY_BYTES), dtype=np.uint64)
    if entries.size != count:
        return False
    present = (entries & PAGEMAP_PRESENT) != 0
    anonymous = (entries & PAGEMAP_FILE) == 0
    swapped = (entries & PAGEMAP_SWAPPED) != 0
    return not bool(np.any(present & anonymous) or np.any(swapped))


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drop this process's resident pages behind memory-mapped ``tensors``; returns the bytes advised.

    Call it only once the tensors' values have been copied where they are needed: their values stay readable
    (re-read from the file on access), but the RAM is given back now. Tensors that are not file-backed, not on
    the CPU or not contiguous are skipped. No-op (0) off Linux.
    """
    if _MADVISE is None:
        return 0
    ranges = [r for r in map(_inner_page_range, tensors) if r is not None]
    if not ranges:
        return 0
    global _mappings_cache
    mappings = _mappings_cache
    starts = [m.start for m in mappings]
    released = 0
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)
    except OSError:
        log.debug("mapped_pages: /proc/self/pagemap is not readable; pages are not released")
        return 0
    with pagemap:
        for start, end in ranges:
            if _containing(mappings, starts, start, end) is None:  # new mapping since the last parse: re-read
                mappings = _mappings_cache = file_mappings()
                starts = [m.start for m in mappings]
            if _containing(mappings, starts, start, end) is None or not _only_clean_file_pages(pagemap, start, end):
                continue
            if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
                released += end - start
            else:
                log.debug("mapped_pages: madvise failed (errno %d)", ctypes.get_errno())
    return released
