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
        safe_read.read_safetensors_header(path)  # refuses truncated or corrupt files with the fix
        sd, all_keys, metadata = _read_safetensors_subset(path)
    else:
        sd, all_keys = _read_pickle_subset(path, kind)
        metadata = {}
    _check_sd15_clip_vae(sd, all_keys, path)
    log.info("clip_vae_from: read %d CLIP/VAE tensors of %s (its UNet is not read)", len(sd), path)
    return sd, metadata


def _read_safetensors_subset(path: str) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    import safetensors

    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            keys = list(f.keys())
            sd = {k: f.get_tensor(k) for k in keys if is_donor_key(k)}
            metadata = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError for any structural problem
        raise LuneFormatError(f"{path}: safetensors could not read the file ({e}). Download it again.") from None
    return sd, keys, metadata


def _read_pickle_subset(path: str, kind: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    obj = safe_read.load_pickle(path, kind)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):  # Lightning-style .ckpt
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise LuneFormatError(f"clip_vae_from: {path} holds a {type(obj).__name__}, not a checkpoint state dict. "
                              f"{DONOR_FIX}")
    keys = [k for k in obj if isinstance(k, str)]
    sd = {k: obj[k] for k in keys if is_donor_key(k) and isinstance(obj[k], torch.Tensor)}
    del obj  # the UNet (and any optimizer state) goes now
    return sd, keys


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
