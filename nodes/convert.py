"""Lune Convert to Safetensors: one-time conversion of a training-state .pt so later loads are a plain mmap."""
from __future__ import annotations

import os

from ..lune.convert import AUTO, convert_to_safetensors, default_output_path
from ..lune.variants import VARIANT_NAMES
from . import paths


class LuneConvertToSafetensors:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": ([n for n in paths.list_models() if not n.startswith(paths.DOWNLOAD_PREFIX)], {
                "tooltip": "The file to convert (typically a ~10 GB training-state .pt). Written beside it as "
                           "<name>.unet.safetensors; an existing file is never overwritten."}),
        }, "optional": {
            "variant": ([AUTO, *VARIANT_NAMES], {"default": AUTO, "tooltip": (
                "Recorded in the output's metadata (lune.variant) so Load Lune Model's auto mode picks it. "
                "auto: what auto mode picks for the source file.")}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "convert"
    CATEGORY = "Lune/utils"
    OUTPUT_NODE = True
    DESCRIPTION = "Writes the UNet of a Lune file as a plain safetensors next to it (then pick it in the loader)."

    def convert(self, model_name, variant=AUTO):
        src = paths.resolve_model(model_name)
        if src is None:
            raise FileNotFoundError(f"{model_name!r} is not in models/checkpoints or models/diffusion_models.")
        dst = default_output_path(src)
        if os.path.exists(dst):
            return {"ui": {"text": [f"already converted: {dst}"]}, "result": (dst,)}
        out = convert_to_safetensors(src, dst, variant=variant, listed_name=model_name)
        return {"ui": {"text": [out]}, "result": (out,)}
