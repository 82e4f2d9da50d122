"""Lune Latent Hand-off: a latent of one model family -> the same picture as a latent of another family."""
from __future__ import annotations

import logging

import torch

from ..lune.errors import LuneError
from ..lune.handoff import (
    RESIZE_METHODS,
    batch_chunks,
    handoff_size,
    latent_family,
    resize_images,
    snap_multiple,
)
from .comfy_internals import ProgressBar

log = logging.getLogger("lune")

NODE = "Lune Latent Hand-off"
CHUNK = 4  # samples per decode/resize/encode step (one progress-bar step each; bounds the pixel batch in memory)
MAX_SIDE = 16384  # ComfyUI's nodes.MAX_RESOLUTION
SCALE_LIMITS = {"min": 0.125, "max": 8.0, "step": 0.05}


def _vae_problem(vae, role: str) -> str | None:
    if getattr(vae, "latent_dim", 2) != 2:
        return (f"{role} is a video VAE ({vae.latent_channels} channels, {vae.latent_dim}-D latents); "
                f"{NODE} converts image latents. Connect an image model's VAE as {role}.")
    if getattr(vae, "latent_channels", None) is None:
        return f"{role} does not report its latent channels; connect a VAE from Load Checkpoint or Load VAE."
    return None


def check_inputs(latent, source_vae, target_vae) -> None:
    """Refuse what the hand-off cannot convert, naming both families and the fix."""
    for vae, role in ((source_vae, "source_vae"), (target_vae, "target_vae")):
        problem = _vae_problem(vae, role)
        if problem:
            raise LuneError(f"{NODE}: {problem}")
    shape = list(latent.shape)
    if latent.ndim != 4:
        raise LuneError(f"{NODE}: the latent has shape {shape} ({latent.ndim}-D); only image latents "
                        "[batch, channels, height/8, width/8] can be handed off. Use an image model's latent.")
    channels, expected = shape[1], source_vae.latent_channels
    if channels != expected:
        raise LuneError(
            f"{NODE}: the latent is {latent_family(channels)} (shape {shape}) but source_vae is a "
            f"{latent_family(expected)} VAE. source_vae must be the VAE of the model that made the latent: "
            f"connect the VAE of that model's checkpoint (or its Load VAE) to source_vae, and the VAE of the model "
            f"that samples next to target_vae.")


class LuneLatentHandoff:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latent to convert (e.g. the first model's sampler output)."}),
            "source_vae": ("VAE", {"tooltip": "The VAE of the model that made the latent (decodes it)."}),
            "target_vae": ("VAE", {"tooltip": "The VAE of the model that samples next (encodes the result)."}),
            "scale": ("FLOAT", {"default": 1.0, **SCALE_LIMITS, "tooltip": (
                "Resize factor applied to the decoded image; width and height are rounded to a multiple of 8. "
                "E.g. 1.5 for SD1.5 512 px → SDXL 768 px, 0.667 for the way back.")}),
            "resize_method": (list(RESIZE_METHODS), {"default": RESIZE_METHODS[0], "tooltip": (
                "Interpolation for the resize (as in Upscale Image); unused when the size does not change.")}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "handoff"
    CATEGORY = "Lune"
    DESCRIPTION = ("Moves a latent to another model family's latent space (SD1.5/Lune ↔ SDXL ↔ SD3/Flux): decodes "
                   "with source_vae, resizes by scale (multiple of 8), encodes with target_vae — the same result as "
                   "VAE Decode → Upscale Image → VAE Encode. Sample the result at partial denoise (about 0.3–0.6).")

    def handoff(self, samples, source_vae, target_vae, scale, resize_method=RESIZE_METHODS[0]):
        latent = samples["samples"]
        check_inputs(latent, source_vae, target_vae)
        if not SCALE_LIMITS["min"] <= scale <= SCALE_LIMITS["max"]:
            raise LuneError(f"{NODE}: scale {scale} is out of range [{SCALE_LIMITS['min']}, "
                            f"{SCALE_LIMITS['max']}]; use 1.0 to keep the size.")
        if source_vae is target_vae and scale == 1.0:
            log.warning("%s: source and target VAE are the same and scale is 1: this only re-encodes the image "
                        "(slightly lossy); connect the latent directly instead.", NODE)
        if "noise_mask" in samples:
            log.warning("%s: the latent's noise mask was dropped (it belongs to the source latent's grid).", NODE)
        multiple = snap_multiple(getattr(target_vae, "downscale_ratio", None))
        chunks = batch_chunks(latent.shape[0], CHUNK)
        progress = ProgressBar(len(chunks))
        converted, size = [], None
        for part in chunks:
            images = source_vae.decode(latent[part])
            if size is None:
                size = handoff_size(images.shape[1], images.shape[2], scale, multiple)
                if max(size) > MAX_SIDE:
                    raise LuneError(f"{NODE}: scale {scale} gives {size[1]}×{size[0]} px, above ComfyUI's "
                                    f"{MAX_SIDE} px limit; lower scale.")
            converted.append(target_vae.encode(resize_images(images, *size, resize_method)[:, :, :, :3]))
            progress.update(1)
        out = converted[0] if len(converted) == 1 else torch.cat(converted)
        log.info("%s: %s %s → %s %s (%d×%d px)", NODE, latent_family(latent.shape[1]), list(latent.shape),
                 latent_family(out.shape[1]), list(out.shape), size[1], size[0])
        result = {"samples": out}
        if "batch_index" in samples:
            result["batch_index"] = samples["batch_index"]
        return (result,)
