"""Load Lune Model: every Lune checkpoint format → MODEL (already set up for its variant), CLIP, VAE."""
from __future__ import annotations

import logging
import os

import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths

from ..lune import formats
from ..lune.clip_vae_donor import read_clip_vae
from ..lune.errors import MissingComponentError, UnsupportedModelError
from ..lune.pipeline_folder import variant_from_pipeline_folder
from ..lune.stamps import file_stamp
from ..lune.variants import (FLOW, SHIFT_FROM_VARIANT, SHIFT_MAX, UNNAMED, VARIANT_NAMES, VARIANTS, check_flow_shift,
                             detect_variant, effective_shift, get_variant)
from . import downloads, model_fill, paths
from .sampling_patches import install_variant

log = logging.getLogger("lune")

FROM_FILE = "(from model file)"
AUTO = "auto"
SHIFT_LIMITS = {"min": 0.05, "max": SHIFT_MAX, "step": 0.05}
# Flow variants' trained shifts, also handed to the frontend (web/lune.js draws the σ plot from them).
VARIANT_SHIFTS = {name: v.default_shift for name, v in VARIANTS.items() if v.prediction == FLOW}


def _shift_tooltip() -> str:
    defaults = ", ".join(f"{name} {s:g}" for name, s in VARIANT_SHIFTS.items())
    return (f"SD3-style flow shift σ' = s·σ/(1+(s−1)·σ). {SHIFT_FROM_VARIANT:g} = the variant's trained shift "
            f"({defaults}); any other value overrides it. Higher spends more steps at high noise. Ignored for sol.")


def _download_variant(repo: str):
    variant = next((v for v in map(get_variant, VARIANT_NAMES) if v.hf_repo == repo), None)
    if variant is None or not variant.hf_unet_file:
        raise MissingComponentError(f"no known file to download for {repo}")
    return variant


def _resolve(model_name: str) -> tuple[str, str | None]:
    """(local path, variant implied by a download entry or None)."""
    repo = paths.entry_repo(model_name)
    if repo is not None:
        variant = _download_variant(repo)
        return downloads.fetch(repo, [variant.hf_unet_file])[0], variant.name
    path = paths.resolve_model(model_name)
    if path is None:
        raise MissingComponentError(f"model file {model_name!r} was not found in models/checkpoints or "
                                    "models/diffusion_models. Refresh the node list (press R) or copy the file there.")
    return path, None


def _model_stamp(model_name: str) -> str:
    """Reload stamp of the model file and the config.json beside it (diffusers ``unet/`` folders)."""
    repo = paths.entry_repo(model_name)
    if repo is not None:
        variant = next((v for v in map(get_variant, VARIANT_NAMES) if v.hf_repo == repo and v.hf_unet_file), None)
        return downloads.stamp(repo, [variant.hf_unet_file]) if variant else model_name
    path = paths.resolve_model(model_name)
    if path is None:
        return model_name
    return file_stamp(path, os.path.join(os.path.dirname(path), "config.json"))


def donor_path(checkpoint_name: str) -> str:
    path = folder_paths.get_full_path("checkpoints", checkpoint_name)
    if path is None:
        raise MissingComponentError(f"clip_vae_from: {checkpoint_name!r} is not in models/checkpoints. Refresh the "
                                    "node list (press R) or pick another SD1.5 checkpoint.")
    return path


def load_clip_vae(checkpoint_name: str):
    """CLIP and VAE of an SD1.5 checkpoint from models/checkpoints; its UNet is never read (any SD1.5 UNet —
    inpainting's 9 channels included — is fine, since only CLIP and VAE are used)."""
    sd, metadata = read_clip_vae(donor_path(checkpoint_name))
    config = comfy.supported_models.SD15(comfy.supported_models.SD15.unet_config)
    # the two steps of comfy.sd.load_state_dict_guess_config that build VAE and CLIP from a checkpoint's keys
    vae_sd = comfy.utils.state_dict_prefix_replace(sd, {p: "" for p in config.vae_key_prefix}, filter_keys=True)
    vae = comfy.sd.VAE(sd=config.process_vae_state_dict(vae_sd), metadata=metadata)
    clip_sd = config.process_clip_state_dict(sd)
    clip = comfy.sd.CLIP(config.clip_target(state_dict=clip_sd),
                         embedding_directory=folder_paths.get_folder_paths("embeddings"), tokenizer_data=clip_sd,
                         parameters=comfy.utils.calculate_parameters(clip_sd))
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    missing = [k for k in missing if ".logit_scale" not in k and ".text_projection.weight" not in k]
    if missing:
        log.warning("clip_vae_from: CLIP weights missing from %s: %s", checkpoint_name, ", ".join(missing[:8]))
    return clip, vae


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
                "auto: read from the file's metadata and path, and from a diffusers folder's model_index.json / "
                "scheduler config (the log says what was chosen). lune / lune-flux: rectified flow. sol: "
                "v-prediction on the SD1.5 discrete schedule. sd-flow-alpha: opendiffusionai/sd-flow-alpha and "
                "finetunes (UNet timestep 999·σ). instaflow: InstaFlow-0.9B and 2-Rectified Flow (output x0 − ε).")}),
            "shift": ("FLOAT", {"default": SHIFT_FROM_VARIANT, **SHIFT_LIMITS, "min": SHIFT_FROM_VARIANT,
                                "variant_shifts": VARIANT_SHIFTS, "tooltip": _shift_tooltip()}),
            "clip_vae_from": ([FROM_FILE, *folder_paths.get_filename_list("checkpoints")], {"tooltip": (
                "Where CLIP and VAE come from. UNet-only files (diffusers, .pt) have none: pick any SD1.5 "
                "checkpoint here, or leave CLIP/VAE unconnected and use separate loaders.")}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "Lune"
    DESCRIPTION = ("Loads an SD1.5 flow model (Lune, Lune-Flux, Sol, sd-flow-alpha, InstaFlow / 2-Rectified Flow) "
                   "and returns it ready for the stock KSampler.")

    @classmethod
    def IS_CHANGED(cls, model_name, variant, shift, clip_vae_from):
        donor = folder_paths.get_full_path("checkpoints", clip_vae_from) if clip_vae_from != FROM_FILE else None
        return (_model_stamp(model_name), variant, shift, file_stamp(donor) if donor else clip_vae_from)

    def load(self, model_name, variant, shift, clip_vae_from):
        if shift != SHIFT_FROM_VARIANT:
            check_flow_shift(shift)
        path, implied = _resolve(model_name)
        ckpt = formats.read_checkpoint(path)
        if variant == AUTO:
            if implied:
                chosen, reason = get_variant(implied), "download entry"
            else:  # the listed name is relative to its models folder; folders above it say nothing
                chosen, reason = variant_from_pipeline_folder(path) or detect_variant(model_name, ckpt.metadata)
            (log.warning if chosen is UNNAMED else log.info)(
                "Lune loader: %s → variant %s (%s)", model_name, chosen.name, reason)
        else:
            chosen = get_variant(variant)
        shift = effective_shift(chosen, shift)

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
