"""Lune Merge Models: many checkpoints → a new .safetensors (streamed, memory independent of their number)."""
from __future__ import annotations

import json
import logging

from ..lune.errors import MissingComponentError
from ..lune.merge import METHODS, MergeParams, merge_models
from ..lune.merge.inputs import output_path, resolve_model_list
from . import comfy_internals as comfy_api

log = logging.getLogger("lune")

FOLDER = "checkpoints"


class LuneMergeModels:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base_name": (comfy_api.get_filename_list(FOLDER), {
                "tooltip": "Base checkpoint θ₀ (models/checkpoints). Task vectors are τᵢ = θᵢ − θ₀; keys only "
                           "in the base are copied; the output keeps its dtypes."}),
            "models": ("STRING", {"multiline": True, "default": "*.safetensors", "tooltip":
                       "One file name or glob per line, relative to models/checkpoints (e.g. 'astolfo/*.safetensors'). "
                       "The base is left out if matched; '#' starts a comment."}),
            "method": (list(METHODS), {"default": "tgmd", "tooltip":
                       "task_arithmetic: θ₀ + λ·mean(τ). ties: top-density trim, magnitude sign vote, disjoint "
                       "mean. ties_soup: sign-count vote, disjoint mean. dare/drop: random drop (dare rescales "
                       "by 1/(1−p)). geometric_median: Weiszfeld. tgmd: DROP → TIES-SOUP → geometric median "
                       "(AstolfoMix-XL)."}),
            "density": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                        "ties only: fraction of each task vector kept (largest |τ|)."}),
            "drop_rate": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                          "dare/drop/tgmd: probability p that an element of τ is dropped (seeded)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip":
                         "λ in θ = θ₀ + λ·τₘ."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                     "Dropout masks come from (seed, model position in the list, key): same seed, same file."}),
            "max_iterations": ("INT", {"default": 100, "min": 0, "max": 1000, "tooltip":
                               "geometric_median/tgmd: Weiszfeld iterations; each one re-reads every model."}),
            "output_name": ("STRING", {"default": "lune_merge", "tooltip":
                            "Written as models/checkpoints/<output_name>.safetensors; an existing file is never "
                            "overwritten."}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "merge"
    CATEGORY = "Lune"
    DESCRIPTION = ("Merges many checkpoints onto a base, one tensor at a time in float64 (TIES, DARE/DROP, geometric "
                   "median, TGMD), writes a new .safetensors with the recipe in its metadata, and loads it.")

    def merge(self, base_name, models, method, density, drop_rate, strength, seed, max_iterations, output_name):
        base = comfy_api.get_full_path(FOLDER, base_name)
        if base is None:
            raise MissingComponentError(f"base_name {base_name!r} is not in models/checkpoints. Press R to refresh.")
        roots = comfy_api.get_folder_paths(FOLDER)
        dst = output_path(output_name, roots[0])
        model_paths = resolve_model_list(models, roots, base)
        params = MergeParams(method=method, density=density, drop_rate=drop_rate, strength=strength, seed=seed,
                             max_iterations=max_iterations)
        bar = comfy_api.ProgressBar(1)

        def progress(done: int, total: int, key: str) -> None:
            bar.update_absolute(done, total)
            comfy_api.throw_exception_if_processing_interrupted()  # Cancel: the partial file is removed

        merge_models(base, model_paths, dst, params, progress=progress,
                     metadata={"lune.merge.node": json.dumps({"base_name": base_name, "models": models})})
        out = comfy_api.load_checkpoint_guess_config(dst, output_vae=True, output_clip=True,
                                                   embedding_directory=comfy_api.get_folder_paths("embeddings"))
        return out[:3]
