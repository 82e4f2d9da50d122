"""Lune Flow Shift: MODEL → MODEL sampled as rectified flow at a given SD3-style shift."""
from __future__ import annotations

import logging

from ..lune.errors import UnsupportedModelError
from ..lune.variants import TRAINED_SHIFT_RANGE, UNNAMED, check_flow_shift, get_variant
from .loader import SHIFT_LIMITS
from .sampling_patches import SolSampling, current_sampling, install_flow, lune_variant_of, require_sd15

log = logging.getLogger("lune")


class LuneShift:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Lune model (or an SD1.5 model you know is flow-trained)."}),
            "shift": ("FLOAT", {"default": 2.0, **SHIFT_LIMITS, "tooltip": (
                f"σ' = s·σ/(1+(s−1)·σ). Trained at {TRAINED_SHIFT_RANGE[0]}–{TRAINED_SHIFT_RANGE[1]}; "
                "1.0 = no shift; higher = more steps spent on composition (high noise).")}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "Lune"
    DESCRIPTION = ("Sets rectified-flow sampling with an SD3-style shift on an SD1.5-architecture model. "
                   "Replaces any earlier sampling patch (never stacks).")

    def patch(self, model, shift):
        require_sd15(model, "Lune Flow Shift")
        if isinstance(current_sampling(model), SolSampling):
            raise UnsupportedModelError(
                "Lune Flow Shift was given a Sol model. Sol is v-prediction on the SD1.5 discrete schedule, not "
                "rectified flow, so a flow shift would give wrong images. Connect Load Lune Model (variant sol) "
                "straight to the sampler instead.")
        check_flow_shift(shift)
        variant = lune_variant_of(model)
        if variant is None:  # a stock loader's MODEL: nothing says which Lune it is, so nothing destructive
            variant = UNNAMED.name
            log.info("Lune Flow Shift: the MODEL carries no Lune variant (stock loader); sampling it as rectified "
                     "flow, and Lune Latent Multiply's 'variant default' will leave its latents unchanged. Load it "
                     "with Load Lune Model to name the variant (lune needs the latent multiplier).")
        return (install_flow(model, shift, get_variant(variant)),)
