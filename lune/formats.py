"""Read every Lune checkpoint format into an LDM-layout UNet state dict (SPEC §1 "Checkpoint files in the wild").

Formats, told apart by content (magic bytes and keys), never by the file extension alone:
  1. diffusers UNet folder   ``…/unet/diffusion_pytorch_model.safetensors`` (+ ``config.json``)
  2. training-state ``.pt``  torch zip pickle ``{"student": unet_sd, "cfg", "opt", "sched", "gstep"}``
  3. single-file LDM         ``model.diffusion_model.*`` + CLIP ``cond_stage_model.*`` + VAE ``first_stage_model.*``
  4. bare UNet safetensors   diffusers keys (or LDM keys) with no prefix and no config

Pickles are opened with ``weights_only=True`` (anything but tensors and plain containers is refused before
it can run) and ``mmap=True``, so a 10 GB training state costs only the pages of the UNet tensors we touch:
the optimizer moments are never read. CUDA-tagged storages are mapped to the CPU.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from . import unet_keys
from .architecture import check_sd15_unet
from .errors import LuneFormatError, MissingComponentError, UnsafeCheckpointError, UnsupportedModelError

log = logging.getLogger("lune")

LDM_UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."
VAE_PREFIXES = ("first_stage_model.", "taesd_encoder.", "taesd_decoder.")
# Where trainers keep the UNet inside a training-state dict, in order of preference (SPEC §1 item 2).
TRAINING_STATE_UNET_KEYS = ("student", "model_state_dict", "unet", "state_dict", "model", "ema")
# Wrappers added by DDP (module.), torch.compile (_orig_mod.) and some trainers (unet.).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "unet.")
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin")
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO_BYTE = 0x80


@dataclass
class LuneCheckpoint:
    """What a file holds. ``unet`` is LDM-keyed without prefix; ``full_state_dict`` only for single-file."""
    path: str
    layout: str
    unet: dict[str, torch.Tensor]
    full_state_dict: dict[str, torch.Tensor] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def has_clip(self) -> bool:
        return bool(self.full_state_dict) and any(k.startswith(CLIP_PREFIX) for k in self.full_state_dict)

    @property
    def has_vae(self) -> bool:
        return bool(self.full_state_dict) and any(k.startswith(VAE_PREFIXES) for k in self.full_state_dict)

    def unet_bytes_fp32(self) -> int:
        return sum(t.numel() * 4 for t in self.unet.values())


# ---------------------------------------------------------------------------------------------------- sniffing

def sniff(path: str) -> str:
    """'safetensors' | 'torch_zip' | 'torch_legacy' by content. Raises LuneFormatError for empty/unknown files."""
    size = os.path.getsize(path)
    if size == 0:
        raise LuneFormatError(f"{path} is empty (0 bytes): the download or copy did not finish. Download it again.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        return "torch_zip"
    if head[0] == PICKLE_PROTO_BYTE:
        return "torch_legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise LuneFormatError(f"{path} is neither a safetensors file nor a PyTorch checkpoint (first bytes "
                          f"{head[:8]!r}). It may be an HTML error page or a partial download; download it again.")


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """Parse and validate the safetensors header; returns (header, data_start).

    Layout: u64 little-endian N, N bytes of JSON, then the data block. Every tensor's ``data_offsets`` must lie
    inside the data block and the block must end where the file ends — otherwise the file is truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise LuneFormatError(f"{path} is truncated ({size} bytes, not even a safetensors header). Download it again.")
        (n,) = struct.unpack("<Q", raw)
        if n > SAFETENSORS_MAX_HEADER or 8 + n > size:
            raise LuneFormatError(f"{path} has a corrupt or truncated safetensors header (header length {n}, file "
                                  f"{size} bytes). Download it again; if it is really a .ckpt, rename it.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LuneFormatError(f"{path}: the safetensors header is not valid JSON ({e}). The file is corrupt; "
                                  "download it again.") from None
    if not isinstance(header, dict):
        raise LuneFormatError(f"{path}: the safetensors header is not a JSON object; the file is corrupt.")
    data_len = size - 8 - n
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = max(ends, default=0)
    if need > data_len:
        raise LuneFormatError(f"{path} is truncated: its header describes {need:,} bytes of tensors but only "
                              f"{data_len:,} are present ({100 * data_len / max(need, 1):.1f}%). Download it again.")
    return header, 8 + n


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load all tensors (after header validation) with safetensors' ``safe_open``, as ComfyUI does."""
    import safetensors

    header, _ = read_safetensors_header(path)
    metadata = header.get("__metadata__") or {}
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError for any structural problem
        raise LuneFormatError(f"{path}: safetensors could not read the file ({e}). Download it again.") from None
    return sd, dict(metadata)


def _refused_global(error: Exception) -> str:
    """What a weights-only load refused, e.g. ``posix.system`` — leaving out torch's advice to retry the load
    unsafely, the one thing a user must not do with an untrusted file."""
    text = str(error)
    match = re.search(r"GLOBAL\s+([\w.]+)", text)
    if match:
        return f"it would import and call {match.group(1)}"
    detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line or "unsupported" in line), "")
    return f"it uses pickle instructions a weights-only load does not allow: {(detail or type(error).__name__)[:200]}"


def read_torch_pickle(path: str, kind: str | None = None) -> Any:
    """``torch.load`` with ``weights_only=True`` (refuses code), ``mmap=True`` for zip files, storages → CPU."""
    kind = kind or sniff(path)
    try:
        if path.lower().endswith((".safetensors", ".sft")):
            # torch.load dispatches on this extension to safetensors; a mis-named pickle goes through a
            # temporary .pt symlink instead (the user's file is not touched).
            with tempfile.TemporaryDirectory(prefix="lune-") as tmp:
                alias = os.path.join(tmp, "checkpoint.pt")
                os.symlink(os.path.abspath(path), alias)
                return torch.load(alias, map_location="cpu", weights_only=True, mmap=(kind == "torch_zip"))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=(kind == "torch_zip"))
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path} was refused: its pickle asks to build objects other than tensors and plain containers "
            f"({_refused_global(e)}). Such a file can run code when loaded, so nothing in it was executed. "
            "Use a .safetensors copy of the model, or re-save the weights as a plain state dict.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0][:200]  # torch's first sentence
        raise LuneFormatError(f"{path} could not be read as a PyTorch checkpoint ({reason}). "
                              "It is corrupt or truncated; download it again.") from None


# ---------------------------------------------------------------------------------------------------- keys

def strip_wrapper_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.``, ``_orig_mod.`` and ``unet.`` wrappers, in any order and repetition."""
    out = {}
    for key, value in sd.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = value
    return out


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unet_from_training_state(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pick the UNet state dict out of a trainer's checkpoint dict; returns (unet_sd, plain-valued info)."""
    if not isinstance(obj, Mapping):
        raise LuneFormatError(f"{path} holds a {type(obj).__name__}, not a state dict or training-state dict.")
    if _tensor_dict(obj):
        return dict(obj), {}
    info = {}
    cfg = obj.get("cfg") or obj.get("config")
    if isinstance(cfg, Mapping):
        info.update({f"cfg.{k}": v for k, v in cfg.items() if isinstance(v, (str, int, float, bool))})
    for k in ("gstep", "global_step", "epoch"):
        if isinstance(obj.get(k), (int, float)):
            info[k] = obj[k]
    for key in TRAINING_STATE_UNET_KEYS:
        if _tensor_dict(obj.get(key)):
            info["training_state_key"] = key
            return dict(obj[key]), info
    found = ", ".join(f"{k!r}" for k in list(obj)[:12])
    raise MissingComponentError(f"{path} has no UNet inside: none of {', '.join(TRAINING_STATE_UNET_KEYS)} holds "
                                f"a tensor state dict (top-level keys: {found}). Is this an optimizer-only or EMA "
                                "file? Pick the checkpoint that holds the model weights (sd15-flow-lune: "
                                "sd15_flow_lune_e52_s52000.pt, whose 'student' entry is the UNet).")


def classify_keys(sd: Mapping[str, torch.Tensor]) -> str:
    """'single_file' | 'unet_ldm' | 'unet_diffusers' | 'unknown' from key names."""
    keys = sd.keys()
    if any(k.startswith(LDM_UNET_PREFIX) for k in keys):
        return "single_file"
    if unet_keys.is_ldm_unet(keys):
        return "unet_ldm"
    if unet_keys.is_diffusers_unet(keys):
        return "unet_diffusers"
    return "unknown"


# ---------------------------------------------------------------------------------------------------- entry points

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


def _read_diffusers_config(config_path: str | None) -> dict | None:
    if config_path is None:
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LuneFormatError(f"{config_path} is not valid JSON ({e}). Restore the config.json that came with the "
                              "UNet, or delete it to let the layout be read from the weights alone.") from None


def read_checkpoint(path: str) -> LuneCheckpoint:
    """Read any supported Lune/SD1.5 file (or diffusers folder) and validate that it is an SD1.5 UNet."""
    if not os.path.exists(path):
        raise MissingComponentError(f"{path} does not exist. Put the model in ComfyUI/models/checkpoints or "
                                    "models/diffusion_models and refresh the node (press R).")
    weights, config_path = find_diffusers_weights(path) if os.path.isdir(path) else (path, None)
    if os.path.basename(weights) in DIFFUSERS_WEIGHT_NAMES:
        weights, config_path = find_diffusers_weights(weights)

    kind = sniff(weights)
    metadata: dict[str, Any] = {}
    if kind == "safetensors":
        sd, metadata = read_safetensors(weights)
        from_pickle = False
    else:
        if weights.lower().endswith((".safetensors", ".sft")):
            log.warning("%s is named .safetensors but is really a PyTorch pickle; reading it safely as such", weights)
        sd, metadata = unet_from_training_state(read_torch_pickle(weights, kind), weights)
        from_pickle = True
    sd = strip_wrapper_prefixes(sd)

    layout = classify_keys(sd)
    full = None
    if layout == "single_file":
        full = sd
        unet = {k[len(LDM_UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    elif layout == "unet_ldm":
        unet = sd
    elif layout == "unet_diffusers":
        unet = unet_keys.diffusers_to_ldm(sd, _read_diffusers_config(config_path), source=weights)
    else:
        check_sd15_unet(sd, weights)  # names a foreign architecture when it recognises one
        sample = ", ".join(list(sd)[:5])
        raise UnsupportedModelError(f"{weights}: no SD1.5 UNet keys found (first keys: {sample}). Lune loads SD1.5 "
                                    "UNets in LDM (model.diffusion_model.*) or diffusers (down_blocks.*) layout.")
    check_sd15_unet(unet, weights)

    if config_path:
        layout_name = "diffusers"
    elif from_pickle and layout != "single_file":
        layout_name = "training_state"
    elif layout == "unet_diffusers":
        layout_name = "bare_diffusers"
    else:
        layout_name = layout
    log.info("read %s as %s (%d UNet tensors)", weights, layout_name, len(unet))
    return LuneCheckpoint(path=weights, layout=layout_name, unet=unet, full_state_dict=full, metadata=metadata)
