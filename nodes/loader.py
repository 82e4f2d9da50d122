"""Load Lune Model: every Lune checkpoint format → MODEL (already set up for its variant), CLIP, VAE."""
from __future__ import annotations

import logging
import os

from ..lune import formats
from ..lune.errors import MissingComponentError
from ..lune.pipeline_folder import variant_from_pipeline_folder
from ..lune.variants import (FLOW, SHIFT_FROM_VARIANT, SHIFT_LIMITS, UNNAMED, VARIANT_NAMES, VARIANTS, check_flow_shift,
                             detect_variant, effective_shift, get_variant)
from . import downloads, paths
from .model_build import build_lune_models, load_donor_clip_vae
from .sampling_patches import install_variant

log = logging.getLogger("lune")

FROM_FILE = "(from model file)"
AUTO = "auto"
# Flow variants' trained shifts, also handed to the frontend (web/lune.js draws the σ plot from them).
VARIANT_SHIFTS = {name: v.default_shift for name, v in VARIANTS.items() if v.prediction == FLOW}


def _shift_tooltip() -> str:
    defaults = ", ".join(f"{name} {s:g}" for name, s in VARIANT_SHIFTS.items())
    return (f"SD3-style flow shift σ' = s·σ/(1+(s−1)·σ). {SHIFT_FROM_VARIANT:g} = the variant's trained shift "
            f"({defaults}); any other value overrides it. Higher spends more steps at high noise. Ignored for sol.")


def _resolve(model_name: str) -> tuple[str, str | None]:
    """(local path, variant implied by a download entry or None)."""
    missing = MissingComponentError(f"model file {model_name!r} was not found in models/checkpoints or "
                                    "models/diffusion_models. Refresh the node list (press R) or copy the file there.")
    files = downloads.choice_files(model_name, paths.MODEL_ENTRIES, paths.resolve_model, missing)
    entry = paths.find_entry(model_name, paths.MODEL_ENTRIES)
    return files[0], entry.variant if entry else None


def _config_beside(path: str) -> list[str]:
    """The config.json a diffusers ``unet/`` folder keeps beside its weights."""
    return [os.path.join(os.path.dirname(path), "config.json")]


def _donor_stamp(checkpoint_name: str) -> str:
    if checkpoint_name == FROM_FILE:
        return checkpoint_name
    return downloads.choice_stamp(checkpoint_name, paths.DONOR_ENTRIES, paths.resolve_checkpoint)


def donor_path(checkpoint_name: str) -> str:
    missing = MissingComponentError(f"clip_vae_from: {checkpoint_name!r} is not in models/checkpoints. Refresh the "
                                    "node list (press R) or pick another SD1.5 checkpoint.")
    return downloads.choice_files(checkpoint_name, paths.DONOR_ENTRIES, paths.resolve_checkpoint, missing)[0]


class LuneModelLoader:
    """Load a Lune / Lune-Flux / Sol checkpoint in any published format and patch its sampling."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (paths.list_models(), {"tooltip": (
                "Lune/Sol checkpoint: single-file (.safetensors/.ckpt) in models/checkpoints, a diffusers "
                "unet/diffusion_pytorch_model.safetensors or a training-state .pt in models/diffusion_models. "
                + downloads.entries_tooltip("diffusion_models"))}),
            "variant": ([AUTO, *VARIANT_NAMES], {"default": AUTO, "tooltip": (
                "auto: read from the file's metadata and path, and from a diffusers folder's model_index.json / "
                "scheduler config (the log says what was chosen). lune / lune-flux: rectified flow. sol: "
                "v-prediction on the SD1.5 discrete schedule. sd-flow-alpha: opendiffusionai/sd-flow-alpha and "
                "finetunes (UNet timestep 999·σ). instaflow: InstaFlow-0.9B and 2-Rectified Flow (output x0 − ε).")}),
            "shift": ("FLOAT", {"default": SHIFT_FROM_VARIANT, **SHIFT_LIMITS, "min": SHIFT_FROM_VARIANT,
                                "variant_shifts": VARIANT_SHIFTS, "tooltip": _shift_tooltip()}),
            "clip_vae_from": ([FROM_FILE, *paths.list_checkpoints(paths.DONOR_ENTRIES)], {"tooltip": (
                "Where CLIP and VAE come from. UNet-only files (diffusers, .pt) have none: pick any SD1.5 "
                "checkpoint here (the [download] entry fetches SD1.5 into models/checkpoints), or leave CLIP/VAE "
                "unconnected and use separate loaders.")}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "Lune"
    DESCRIPTION = ("Loads an SD1.5 flow model (Lune, Lune-Flux, Sol, sd-flow-alpha, InstaFlow / 2-Rectified Flow) "
                   "and returns it ready for the stock KSampler.")

    @classmethod
    def IS_CHANGED(cls, model_name, variant, shift, clip_vae_from):
        model_stamp = downloads.choice_stamp(model_name, paths.MODEL_ENTRIES, paths.resolve_model, _config_beside)
        return (model_stamp, variant, shift, _donor_stamp(clip_vae_from))

    def load(self, model_name, variant, shift, clip_vae_from):
        if shift != SHIFT_FROM_VARIANT:
            check_flow_shift(shift)
        path, implied = _resolve(model_name)
        ckpt = formats.read_checkpoint(path)
        if variant == AUTO:
            chosen, reason = self._detect(model_name, path, implied, ckpt.metadata)
            (log.warning if chosen is UNNAMED else log.info)(
                "Lune loader: %s → variant %s (%s)", model_name, chosen.name, reason)
        else:
            chosen = get_variant(variant)
        shift = effective_shift(chosen, shift)

        model, clip, vae = build_lune_models(ckpt)
        del ckpt
        if clip_vae_from != FROM_FILE:
            clip, vae = load_donor_clip_vae(donor_path(clip_vae_from), clip_vae_from)
        elif clip is None:
            log.warning("Lune loader: %s is UNet-only; CLIP/VAE outputs are empty. Set clip_vae_from to an SD1.5 "
                        "checkpoint or use separate CLIP/VAE loaders.", os.path.basename(path))
        return (install_variant(model, chosen, shift), clip, vae)

    @staticmethod
    def _detect(model_name: str, path: str, implied: str | None, metadata: dict):
        """(variant, reason) for ``auto``: a download entry's repo, a diffusers pipeline folder's configs, then the
        listed name (relative to its models folder; folders above it say nothing) and the file's metadata."""
        if implied:
            return get_variant(implied), "download entry"
        return variant_from_pipeline_folder(path) or detect_variant(model_name, metadata)
