"""Read every Lune checkpoint format into the state dicts ComfyUI's loaders take.

Formats, told apart by content (magic bytes and key names, see ``safe_read`` and ``architecture``), never by the
file extension alone (model cards of AbstractPhil/sd15-flow-lune, sd15-flow-lune-flux, tinyflux-experts):
  1. diffusers UNet folder   ``…/unet/diffusion_pytorch_model.safetensors`` (+ ``config.json``)
  2. training-state ``.pt``  torch zip pickle ``{"student": unet_sd, "cfg", "opt", "sched", "gstep"}``
  3. single-file LDM         ``model.diffusion_model.*`` + CLIP ``cond_stage_model.*`` + VAE ``first_stage_model.*``
  4. bare UNet safetensors   diffusers keys (or LDM keys) with no prefix and no config

UNet-only files are returned with the key names they were stored under (LDM or diffusers): ComfyUI's
``comfy.sd.load_diffusion_model_state_dict`` renames diffusers SD1.5 keys itself. This module only checks that
the UNet is a complete SD1.5 UNet (``architecture``). Pickles are read with ``weights_only=True`` and ``mmap``, so
the optimizer moments of a 10 GB training state are never read.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from . import safe_read
from .architecture import check_complete_unet, check_sd15_unet
from .errors import LuneFormatError, MissingComponentError

log = logging.getLogger("lune")

LDM_UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."
VAE_PREFIXES = ("first_stage_model.", "taesd_encoder.", "taesd_decoder.")
# Where trainers keep the UNet inside a training-state dict, in order of preference (the Lune trainer: "student").
TRAINING_STATE_UNET_KEYS = ("student", "model_state_dict", "unet", "state_dict", "model", "ema")
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin")


@dataclass
class LuneCheckpoint:
    """What a file holds. ``unet`` has no prefix, in ``unet_layout`` names; ``full_state_dict`` only for
    single-file checkpoints (it is the whole file, UNet included)."""
    path: str
    layout: str
    unet: dict[str, torch.Tensor]
    unet_layout: str = "ldm"
    full_state_dict: dict[str, torch.Tensor] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def has_clip(self) -> bool:
        return bool(self.full_state_dict) and any(k.startswith(CLIP_PREFIX) for k in self.full_state_dict)

    @property
    def has_vae(self) -> bool:
        return bool(self.full_state_dict) and any(k.startswith(VAE_PREFIXES) for k in self.full_state_dict)


def training_state_info(obj: Any) -> dict[str, Any]:
    """Plain values worth keeping from a trainer dict: ``cfg.*`` entries and the step/epoch counters."""
    info: dict[str, Any] = {}
    cfg = obj.get("cfg") or obj.get("config")
    if isinstance(cfg, dict):
        info.update({f"cfg.{k}": v for k, v in cfg.items() if isinstance(v, (str, int, float, bool))})
    for k in ("gstep", "global_step", "epoch"):
        if isinstance(obj.get(k), (int, float)):
            info[k] = obj[k]
    return info


def find_diffusers_weights(path: str) -> tuple[str, str | None]:
    """For a diffusers model folder (or its ``unet/`` folder, or a file inside it) return (weights, config.json)."""
    if os.path.isdir(path):
        for folder in (os.path.join(path, "unet"), path):
            for name in DIFFUSERS_WEIGHT_NAMES:
                candidate = os.path.join(folder, name)
                if os.path.isfile(candidate):
                    return find_diffusers_weights(candidate)
        raise MissingComponentError(f"{path} is a folder without a diffusers UNet "
                                    f"({' or '.join(DIFFUSERS_WEIGHT_NAMES[:2])} in it or in unet/).")
    config = os.path.join(os.path.dirname(path), "config.json")
    return path, (config if os.path.isfile(config) else None)


def check_diffusers_config(config_path: str) -> None:
    """The weights decide the architecture; a damaged ``config.json`` beside them is still refused, because it
    means the folder download did not finish."""
    try:
        with open(config_path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LuneFormatError(f"{config_path} is not valid JSON ({e}). Restore the config.json that came with the "
                              "UNet, or delete it to let the layout be read from the weights alone.") from None


def _read_state_dict(weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """(wrapper-free state dict, metadata, came from a pickle)."""
    raw = safe_read.read_weights_file(weights)
    if raw.format == safe_read.SAFETENSORS:
        return safe_read.strip_wrapper_prefixes(raw.content), raw.metadata, False
    found = safe_read.find_state_dict(raw.content, weights, TRAINING_STATE_UNET_KEYS)
    if found is None:
        shown = ", ".join(f"{k!r}" for k in list(raw.content)[:12])
        raise MissingComponentError(f"{weights} has no UNet inside: none of {', '.join(TRAINING_STATE_UNET_KEYS)} "
                                    f"holds a tensor state dict (top-level keys: {shown}). Is this an optimizer-only "
                                    "or EMA file? Pick the checkpoint that holds the model weights (sd15-flow-lune: "
                                    "sd15_flow_lune_e52_s52000.pt, whose 'student' entry is the UNet).")
    sd, container = found
    info = training_state_info(raw.content) if container != "bare" else {}
    if container != "bare":
        info["training_state_key"] = container
    return safe_read.strip_wrapper_prefixes(sd), info, True


def read_checkpoint(path: str) -> LuneCheckpoint:
    """Read any supported Lune/SD1.5 file (or diffusers folder) and validate that it holds a complete SD1.5 UNet."""
    if not os.path.exists(path):
        raise MissingComponentError(f"{path} does not exist. Put the model in ComfyUI/models/checkpoints or "
                                    "models/diffusion_models and refresh the node (press R).")
    weights, config_path = find_diffusers_weights(path) if os.path.isdir(path) else (path, None)
    if os.path.basename(weights) in DIFFUSERS_WEIGHT_NAMES:
        weights, config_path = find_diffusers_weights(weights)
    if config_path:
        check_diffusers_config(config_path)

    sd, metadata, from_pickle = _read_state_dict(weights)
    full = None
    if any(k.startswith(LDM_UNET_PREFIX) for k in sd):
        full = sd
        unet = {k[len(LDM_UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    else:
        unet = sd
    unet_layout = check_sd15_unet(unet, weights)
    check_complete_unet(unet, unet_layout, weights)

    if full is not None:
        layout = "single_file"
    elif config_path:
        layout = "diffusers"
    elif from_pickle:
        layout = "training_state"
    else:
        layout = f"bare_{unet_layout}"
    log.info("read %s as %s (%d UNet tensors, %s names)", weights, layout, len(unet), unet_layout)
    return LuneCheckpoint(path=weights, layout=layout, unet=unet, unet_layout=unet_layout, full_state_dict=full,
                          metadata=metadata)
