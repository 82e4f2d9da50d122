"""Copy a state dict into a built module a few tensors at a time, giving back each chunk's source memory at once.

``module.load_state_dict(sd)`` copies every tensor (``param.copy_(source)`` under ``no_grad``, torch
``nn.Module._load_from_state_dict``) while the whole source stays resident, so a load peaks at source + model.
Calling ``load_state_dict(chunk, strict=False)`` on consecutive chunks runs the very same per-module copy code —
the result is bit-identical — and lets the source of a finished chunk go: its dict references are dropped and its
memory-mapped pages are released (``lune.mapped_pages``). The peak becomes model + one chunk.
"""
from __future__ import annotations

from typing import Iterator, MutableMapping

import torch

from . import mapped_pages

CHUNK_BYTES = 64 * 2**20  # source bytes copied between two releases: small against a 3.4 GB UNet, few passes


def _chunks(state_dict: MutableMapping[str, torch.Tensor], chunk_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """Pop consecutive entries (file order, so pages are read sequentially) in groups of about ``chunk_bytes``."""
    chunk, size = {}, 0
    for key in list(state_dict):
        tensor = state_dict.pop(key)
        chunk[key] = tensor
        size += tensor.numel() * tensor.element_size()
        if size >= chunk_bytes:
            yield chunk
            chunk, size = {}, 0
    if chunk:
        yield chunk


def fill_module(module: torch.nn.Module, state_dict: MutableMapping[str, torch.Tensor],
                chunk_bytes: int = CHUNK_BYTES) -> tuple[list[str], list[str]]:
    """Load ``state_dict`` into ``module`` like ``module.load_state_dict(state_dict, strict=False)``.

    ``state_dict`` is emptied as it goes (each entry is popped before its chunk is copied). Returns
    ``(missing_keys, unexpected_keys)`` over the whole dict, as ``load_state_dict`` reports them. Shape mismatches
    raise the same RuntimeError as ``load_state_dict``.
    """
    expected = list(module.state_dict(keep_vars=True))
    expected_set = set(expected)
    seen: set[str] = set()
    for chunk in _chunks(state_dict, chunk_bytes):
        seen.update(chunk)
        module.load_state_dict(chunk, strict=False)
        mapped_pages.release_file_pages(chunk.values())
        del chunk
    missing = [k for k in expected if k not in seen]
    unexpected = [k for k in seen if k not in expected_set]
    return missing, unexpected
