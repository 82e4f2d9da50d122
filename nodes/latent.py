"""Lune Latent Multiply: the author's latent correction, between the sampler and VAE Decode."""
from __future__ import annotations

import logging

from ..lune.errors import LuneError
from ..lune.latent import (AUTO, MANUAL_RANGE, MODES, VARIANT_DEFAULT, apply_multiplier, estimate_multiplier,
                           nonfinite_problem, resolve_mode, sd15_latent_problem)
from .sampling_patches import lune_variant_of

log = logging.getLogger("lune")

TAG = "lune_latent_multiplier"


def applied_to(samples: dict) -> bool:
    """True when ``samples`` is exactly the output of this node (same tensor): correcting again is refused."""
    tag = samples.get(TAG)
    return bool(tag) and tag.get("data_ptr") == samples["samples"].data_ptr()


class LuneLatentMultiply:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The sampler's output latent, before VAE Decode."}),
            "mode": (list(MODES), {"default": VARIANT_DEFAULT, "tooltip": (
                "variant default: lune → auto, every other variant (and a model whose variant was not named) → "
                "1.0 (needs the model input). auto: one factor per batch from the latents' spread (0.25–1.0, "
                "reported in the log). fixed: use multiplier.")}),
            "multiplier": ("FLOAT", {"default": 1.0, "min": MANUAL_RANGE[0], "max": MANUAL_RANGE[1], "step": 0.01,
                                     "tooltip": "Used in fixed mode. Lower it if the image is too bright or "
                                                "pixelated."}),
        }, "optional": {
            "model": ("MODEL", {"tooltip": "The Lune model that produced the latent (tells the variant)."}),
        }}

    RETURN_TYPES = ("LATENT", "FLOAT")
    RETURN_NAMES = ("samples", "factor")
    FUNCTION = "apply"
    CATEGORY = "Lune"
    DESCRIPTION = ("Multiplies the sampled latent before decoding (sd15-flow-lune needs < 1, lune-flux 1.0). "
                   "The only latent correction in the pack; applying it twice to the same latent is refused.")

    def apply(self, samples, mode, multiplier, model=None):
        if applied_to(samples):
            raise LuneError("this latent was already corrected by Lune Latent Multiply; remove the second one "
                            "(applying the factor twice darkens the image).")
        x = samples["samples"]
        problem = sd15_latent_problem(x) or nonfinite_problem(x)
        if problem:
            raise LuneError(f"Lune Latent Multiply: {problem}")
        variant = lune_variant_of(model) if model is not None else None
        mode, multiplier, note = resolve_mode(mode, multiplier, variant, model is not None)
        if note:
            log.info("Lune latent multiply: %s", note)
        if mode == AUTO:
            factor = float(estimate_multiplier(x))
            log.info("Lune latent multiply: auto factor %.3f for the batch of %d", factor, x.shape[0])
        else:
            factor = multiplier
        out = dict(samples)
        out["samples"] = apply_multiplier(x, factor)
        out[TAG] = {"factor": factor, "data_ptr": out["samples"].data_ptr()}
        return (out, factor)
