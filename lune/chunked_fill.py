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


def _owning_modules(module: torch.nn.Module) -> dict[str, torch.nn.Module] | None:
    """Qualified name → submodule, or None when a module has load_state_dict hooks: hooks of an ancestor only
    run when loading starts at the root, so then every chunk is loaded from the root (slower, same result)."""
    owners = {}
    for name, sub in module.named_modules():
        if sub._load_state_dict_pre_hooks or sub._load_state_dict_post_hooks:
            return None
        owners[name] = sub
    return owners


def _load_chunk(module: torch.nn.Module, owners: dict[str, torch.nn.Module] | None,
                chunk: dict[str, torch.Tensor]) -> None:
    """``module.load_state_dict(chunk, strict=False)``, started at each key's owning submodule so a chunk does
    not walk the whole module tree (torch calls the same ``_load_from_state_dict`` of that submodule)."""
    if owners is None:
        module.load_state_dict(chunk, strict=False)
        return
    groups: dict[str, dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in chunk.items():
        owner, _, local = key.rpartition(".")
        if owner in owners:
            groups.setdefault(owner, {})[local] = tensor
        else:
            rest[key] = tensor
    for owner, group in groups.items():
        owners[owner].load_state_dict(group, strict=False)
    if rest:
        module.load_state_dict(rest, strict=False)


def fill_module(module: torch.nn.Module, state_dict: MutableMapping[str, torch.Tensor],
                chunk_bytes: int = CHUNK_BYTES) -> tuple[list[str], list[str]]:
    """Load ``state_dict`` into ``module`` like ``module.load_state_dict(state_dict, strict=False)``.

    ``state_dict`` is emptied as it goes (each entry is popped before its chunk is copied). Returns
    ``(missing_keys, unexpected_keys)`` over the whole dict, as ``load_state_dict`` reports them. Shape mismatches
    raise the same RuntimeError as ``load_state_dict``.
    """
    expected = list(module.state_dict(keep_vars=True))
    expected_set = set(expected)
    owners = _owning_modules(module)
    seen: set[str] = set()
    for chunk in _chunks(state_dict, chunk_bytes):
        seen.update(chunk)
        _load_chunk(module, owners, chunk)
        mapped_pages.release_file_pages(chunk.values())
        del chunk
    missing = [k for k in expected if k not in seen]
    unexpected = [k for k in seen if k not in expected_set]
    return missing, unexpected
