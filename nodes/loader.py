"""Load Lune Model: every Lune checkpoint format → MODEL (already set up for its variant), CLIP, VAE."""
from __future__ import annotations

import logging
import os

import comfy.sd
import comfy.utils
import folder_paths

from ..lune import formats, hub
from ..lune.errors import MissingComponentError, UnsupportedModelError
from ..lune.variants import (SHIFT_MAX, TRAINED_SHIFT_RANGE, VARIANT_NAMES, check_flow_shift, detect_variant,
                             get_variant)
from . import model_fill, paths
from .sampling_patches import install_variant

log = logging.getLogger("lune")

FROM_FILE = "(from model file)"
AUTO = "auto"
SHIFT_LIMITS = {"min": 0.05, "max": SHIFT_MAX, "step": 0.05}


def _resolve(model_name: str) -> tuple[str, str | None]:
    """(local path, variant implied by a download entry or None)."""
    if model_name.startswith(paths.DOWNLOAD_PREFIX):
        repo = model_name[len(paths.DOWNLOAD_PREFIX):]
        variant = next((v for v in map(get_variant, VARIANT_NAMES) if v.hf_repo == repo), None)
        if variant is None or not variant.hf_unet_file:
            raise MissingComponentError(f"no known file to download for {repo}")
        bar = comfy.utils.ProgressBar(100)
        path = hub.fetch(repo, variant.hf_unet_file, paths.download_root(repo),
                         progress=lambda done, total: bar.update_absolute(int(100 * done / max(total, 1)), 100))
        return path, variant.name
    path = paths.resolve_model(model_name)
    if path is None:
        raise MissingComponentError(f"model file {model_name!r} was not found in models/checkpoints or "
                                    "models/diffusion_models. Refresh the node list (press R) or copy the file there.")
    return path, None


def _file_stamp(path: str) -> str:
    """Changes whenever the file (or its config.json) is replaced: size, mtime, and inode + ctime, because a
    copy that keeps size and mtime (``cp -p``, ``rsync -t``, an atomic rename of such a copy) must reload too."""
    parts = []
    for p in (path, os.path.join(os.path.dirname(path), "config.json")):
        if os.path.exists(p):
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}")
    return "|".join(parts)


def load_clip_vae(checkpoint_name: str):
    """CLIP and VAE of an SD1.5 checkpoint from models/checkpoints (its UNet is validated, not loaded)."""
    path = folder_paths.get_full_path("checkpoints", checkpoint_name)
    if path is None:
        raise MissingComponentError(f"clip_vae_from: {checkpoint_name!r} is not in models/checkpoints.")
    ckpt = formats.read_checkpoint(path)
    if not (ckpt.has_clip and ckpt.has_vae):
        raise MissingComponentError(f"clip_vae_from: {path} has no CLIP and VAE inside (it is UNet-only). "
                                    "Choose a full SD1.5 checkpoint, e.g. v1-5-pruned-emaonly.safetensors.")
    out = comfy.sd.load_state_dict_guess_config(ckpt.full_state_dict, output_vae=True, output_clip=True,
                                                 output_model=False, metadata=ckpt.metadata,
                                                 embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return out[1], out[2]


class LuneModelLoader:
    """Load a Lune / Lune-Flux / Sol checkpoint in any published format and patch its sampling."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (paths.list_models(), {"tooltip": (
                "Lune/Sol checkpoint: single-file (.safetensors/.ckpt) in models/checkpoints, a diffusers "
                "unet/diffusion_pytorch_model.safetensors or a training-state .pt in models/diffusion_models. "
                "[download] entries fetch the published weights from Hugging Face (honours HF_HUB_OFFLINE).")}),
            "variant": ([AUTO, *VARIANT_NAMES], {"default": AUTO, "tooltip": (
                "auto: read from the file's metadata and path (the log says what was chosen). lune / lune-flux: "
                "rectified flow. sol: v-prediction on the SD1.5 discrete schedule.")}),
            "shift": ("FLOAT", {"default": 2.0, **SHIFT_LIMITS, "tooltip": (
                f"SD3-style flow shift σ' = s·σ/(1+(s−1)·σ). Lune was trained at "
                f"{TRAINED_SHIFT_RANGE[0]}–{TRAINED_SHIFT_RANGE[1]}; higher spends more steps at high noise. "
                "Ignored for sol.")}),
            "clip_vae_from": ([FROM_FILE, *folder_paths.get_filename_list("checkpoints")], {"tooltip": (
                "Where CLIP and VAE come from. UNet-only files (diffusers, .pt) have none: pick any SD1.5 "
                "checkpoint here, or leave CLIP/VAE unconnected and use separate loaders.")}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "Lune"
    DESCRIPTION = "Loads a Lune/Sol SD1.5 flow-matching model and returns it ready for the stock KSampler."

    @classmethod
    def IS_CHANGED(cls, model_name, variant, shift, clip_vae_from):
        path = paths.resolve_model(model_name) if not model_name.startswith(paths.DOWNLOAD_PREFIX) else None
        return (_file_stamp(path) if path else model_name, variant, shift, clip_vae_from)

    def load(self, model_name, variant, shift, clip_vae_from):
        check_flow_shift(shift)
        path, implied = _resolve(model_name)
        ckpt = formats.read_checkpoint(path)
        if variant == AUTO:
            chosen, reason = (get_variant(implied), "download entry") if implied else detect_variant(path, ckpt.metadata)
            log.info("Lune loader: %s → variant %s (%s)", os.path.basename(path), chosen.name, reason)
        else:
            chosen = get_variant(variant)

        clip = vae = None
        if ckpt.layout == "single_file":
            out = model_fill.load_checkpoint(ckpt.full_state_dict, metadata=ckpt.metadata,
                                             embedding_directory=folder_paths.get_folder_paths("embeddings"))
            if out is None or out[0] is None:
                raise UnsupportedModelError(f"ComfyUI could not build an SD1.5 model from {path}.")
            model, clip, vae = out[0], out[1], out[2]
        else:
            model = model_fill.load_unet(ckpt.unet, metadata=ckpt.metadata)
            if model is None:
                raise UnsupportedModelError(f"ComfyUI could not build an SD1.5 UNet from {path}.")
        del ckpt

        if clip_vae_from != FROM_FILE:
            clip, vae = load_clip_vae(clip_vae_from)
        elif clip is None:
            log.warning("Lune loader: %s is UNet-only; CLIP/VAE outputs are empty. Set clip_vae_from to an SD1.5 "
                        "checkpoint or use separate CLIP/VAE loaders.", os.path.basename(path))
        return (install_variant(model, chosen, shift), clip, vae)
