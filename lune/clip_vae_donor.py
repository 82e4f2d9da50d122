"""Read only the CLIP text encoder and VAE of an SD1.5 checkpoint — the parts a UNet-only Lune file borrows.

An SD1.5 single-file checkpoint (CompVis/LDM layout, as ComfyUI's CheckpointSave and the original
``v1-5-pruned-emaonly`` write it) keeps three models under three prefixes:

    model.diffusion_model.*   the UNet          (never read here: 4- or 9-channel, EMA or not, it does not matter)
    cond_stage_model.*        CLIP-L text model (SD1.5: ``cond_stage_model.transformer.…``, 768 wide)
    first_stage_model.*       the VAE

safetensors files are read tensor by tensor (``safe_open(...).get_tensor``), so the UNet's bytes are never loaded.
Pickles cannot be read partially: they are loaded safely (``lune.safe_read.load_pickle``: weights only,
memory-mapped when zipped) and everything but CLIP and VAE is dropped at once.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from . import safe_read
from .errors import LuneFormatError, MissingComponentError, UnsupportedModelError

log = logging.getLogger("lune")

CLIP_PREFIX = "cond_stage_model."
VAE_PREFIX = "first_stage_model."
DONOR_PREFIXES = (CLIP_PREFIX, VAE_PREFIX)
SD15_CLIP_TOKEN_EMBEDDING = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD15_CLIP_WIDTH = 768
DONOR_FIX = "Choose a full SD1.5 checkpoint (with CLIP and VAE inside), e.g. v1-5-pruned-emaonly.safetensors."


def is_donor_key(key: str) -> bool:
    return key.startswith(DONOR_PREFIXES)


def read_clip_vae(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(CLIP + VAE tensors with their checkpoint prefixes, safetensors metadata) of the SD1.5 checkpoint at ``path``.

    Raises MissingComponentError when CLIP or VAE is absent (UNet-only files) and UnsupportedModelError when the
    text encoder is not SD1.5's CLIP-L (SD2's OpenCLIP, SDXL's ``conditioner.*``).
    """
    kind = safe_read.sniff(path)
    if kind == safe_read.SAFETENSORS:
        all_keys = [k for k in safe_read.read_safetensors_header(path) if k != "__metadata__"]
        sd, metadata = safe_read.read_safetensors(path, keep=is_donor_key)  # the UNet's bytes are never read
    else:
        sd, all_keys = _read_pickle_subset(path, kind)
        metadata = {}
    _check_sd15_clip_vae(sd, all_keys, path)
    log.info("clip_vae_from: read %d CLIP/VAE tensors of %s (its UNet is not read)", len(sd), path)
    return sd, metadata


def _read_pickle_subset(path: str, kind: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    found = safe_read.find_state_dict(safe_read.load_pickle(path, kind), path, ("state_dict",))
    if found is None:
        raise LuneFormatError(f"clip_vae_from: {path} holds no checkpoint state dict. {DONOR_FIX}")
    state, _ = found
    return {k: v for k, v in state.items() if is_donor_key(k)}, list(state)  # the UNet goes with ``state``


def _check_sd15_clip_vae(sd: Mapping[str, torch.Tensor], all_keys: list[str], path: str) -> None:
    has_clip = any(k.startswith(CLIP_PREFIX) for k in sd)
    has_vae = any(k.startswith(VAE_PREFIX) for k in sd)
    if any(k.startswith("conditioner.embedders.") for k in all_keys):
        raise UnsupportedModelError(f"clip_vae_from: {path} is an SDXL checkpoint (conditioner.* text encoders); "
                                    f"Lune needs SD1.5's CLIP-L and VAE. {DONOR_FIX}")
    if not (has_clip and has_vae):
        missing = " and ".join(n for n, ok in (("CLIP", has_clip), ("VAE", has_vae)) if not ok)
        raise MissingComponentError(f"clip_vae_from: {path} has no {missing} inside (it is UNet-only or a partial "
                                    f"export). {DONOR_FIX}")
    embedding = sd.get(SD15_CLIP_TOKEN_EMBEDDING, sd.get(SD15_CLIP_TOKEN_EMBEDDING.replace(".text_model", "")))
    if embedding is None or embedding.ndim != 2 or embedding.shape[1] != SD15_CLIP_WIDTH:
        found = "no CLIP-L token embedding" if embedding is None else f"a {embedding.shape[1]}-wide text encoder"
        raise UnsupportedModelError(f"clip_vae_from: {path} has {found}; SD1.5's CLIP-L is {SD15_CLIP_WIDTH} wide "
                                    f"(an SD2 checkpoint?). {DONOR_FIX}")
