"""Lune Merge Models: many checkpoints → a new .safetensors (streamed, memory bounded by a budget).

The math, the recipe (re-run reuse) and the file handling are ``lune.merge``; this node resolves the names the user
typed (``lune.merge.inputs``), hands the library ComfyUI's own diffusers → LDM UNet name map when an input is a
diffusers-named UNet, reports progress on ComfyUI's progress bar, lets Cancel stop the merge (the partial file is
removed) and loads the result with ComfyUI's checkpoint loader.
"""
from __future__ import annotations

import json
import logging
import types

import torch

from ..lune.errors import LuneError, MissingComponentError, UnsupportedModelError
from ..lune.merge import DEFAULT_MEMORY_BUDGET_GIB, METHODS, STOP_RULES, MergeParams, merge_models
from ..lune.merge.inputs import output_path, resolve_model_list
from ..lune.merge.methods import tooltip as methods_tooltip
from ..lune.merge.sources import header_shapes
from ..lune.stamps import file_stamp
from . import comfy_internals as comfy_api

log = logging.getLogger("lune")

FOLDER = "checkpoints"
FROM_BASE = "(from the base)"
DIFFUSERS_UNET_KEY = "conv_in.weight"  # a diffusers UNet's first conv (LDM: input_blocks.0.0.weight)


def _base_path(base_name: str) -> str:
    base = comfy_api.get_full_path(FOLDER, base_name)
    if base is None:
        raise MissingComponentError(f"base_name {base_name!r} is not in models/checkpoints. Press R to refresh.")
    return base


def _donor_path(clip_vae_from: str) -> str | None:
    if not clip_vae_from or clip_vae_from == FROM_BASE:
        return None
    path = comfy_api.get_full_path(FOLDER, clip_vae_from)
    if path is None:
        raise MissingComponentError(f"clip_vae_from {clip_vae_from!r} is not in models/checkpoints. Press R to "
                                    f"refresh, or pick {FROM_BASE!r}.")
    return path


def _inputs(base_name: str, models: str, clip_vae_from: str) -> tuple[str, list[str], str | None]:
    base = _base_path(base_name)
    return base, resolve_model_list(models, comfy_api.get_folder_paths(FOLDER), base), _donor_path(clip_vae_from)


def diffusers_unet_names(paths) -> dict[str, str] | None:
    """{diffusers UNet name: LDM name} from ComfyUI's own tables, for the first diffusers-named input (None when no
    input is one): ``unet_config_from_diffusers_unet`` recognises the UNet from its tensor names and shapes (read
    from the safetensors header; no tensor is loaded) and ``unet_to_diffusers`` lists the names, as ComfyUI's
    UNETLoader does."""
    for path in paths:
        shapes = header_shapes(path)
        stripped = {k.removeprefix("unet."): v for k, v in shapes.items()}
        if DIFFUSERS_UNET_KEY not in stripped:
            continue
        fake = {k: types.SimpleNamespace(shape=torch.Size(v)) for k, v in stripped.items()}
        config = comfy_api.unet_config_from_diffusers_unet(fake)
        if not config:
            raise UnsupportedModelError(f"{path} is a diffusers-named UNet that ComfyUI does not recognise. Merge "
                                        "SD1.5 UNets, or convert the file to a single-file checkpoint first.")
        return dict(comfy_api.unet_to_diffusers(config))
    return None


class LuneMergeModels:
    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = comfy_api.get_filename_list(FOLDER)
        return {"required": {
            "base_name": (checkpoints, {
                "tooltip": "Base checkpoint θ₀ (models/checkpoints). Task vectors are τᵢ = θᵢ − θ₀; keys only "
                           "in the base are copied; the output keeps its dtypes."}),
            "models": ("STRING", {"multiline": True, "default": "*.safetensors", "tooltip":
                       "One file name or glob per line, relative to models/checkpoints (e.g. 'astolfo/*.safetensors'). "
                       "The base is left out if matched; '#' starts a comment."}),
            "method": (list(METHODS), {"default": "tgmd", "tooltip": methods_tooltip()}),
            "density": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                        "ties only: fraction of each task vector kept (the entries of largest magnitude)."}),
            "drop_rate": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                          "dare/drop/tgmd: probability p that an element of τ is dropped (seeded)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip":
                         "λ in θ = θ₀ + λ·τₘ."}),
            "dropout_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                     "control_after_generate": False, "tooltip":
                                     "dare/drop/tgmd: dropout masks come from (seed, model position in the list, "
                                     "key): same seed, same file."}),
            "max_iterations": ("INT", {"default": 100, "min": 0, "max": 1000, "tooltip":
                               "geometric_median/tgmd: at most this many Weiszfeld iterations per key (they run "
                               "on an N × N Gram matrix: cheap)."}),
            "stop": (list(STOP_RULES), {"default": STOP_RULES[0], "tooltip":
                     "geometric_median/tgmd: precision stops once no weight is expected to move by half a step "
                     "of the output dtype; reference runs the released TGMD rule (in practice max_iterations)."}),
            "memory_budget_gib": ("FLOAT", {"default": DEFAULT_MEMORY_BUDGET_GIB, "min": 0.25, "max": 256.0,
                                            "step": 0.25, "tooltip":
                                            "Memory for one key's float64 terms; keys that do not fit are merged "
                                            "in chunks (more reads, same result)."}),
            "output_name": ("STRING", {"default": "lune_merge", "tooltip":
                            "Written as models/checkpoints/<output_name>.safetensors. An existing file with the "
                            "same recipe is reused; one with another recipe is never overwritten."}),
            "clip_vae_from": ([FROM_BASE, *checkpoints], {"default": FROM_BASE, "tooltip":
                              "Where the output's CLIP and VAE come from: the base, or another SD1.5 checkpoint "
                              "(needed when the base is a UNet-only file)."}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "merge"
    CATEGORY = "Lune"
    DESCRIPTION = ("Merges many checkpoints onto a base, one tensor at a time in float64 (TIES, DARE/DROP, geometric "
                   "median, TGMD), writes a new .safetensors with the recipe in its metadata, and loads it. "
                   "Queued again with the same recipe, it reuses that file.")

    @classmethod
    def IS_CHANGED(cls, base_name, models, output_name, clip_vae_from=FROM_BASE, **settings):
        """The settings and the stamps of every input file and of the output: the node runs again when a file
        changes (the recipe then decides between reuse and refusal)."""
        try:
            base, paths, donor = _inputs(base_name, models, clip_vae_from)
            dst = output_path(output_name, comfy_api.get_folder_paths(FOLDER)[0])
        except LuneError as e:  # the run reports it; never cache a failing input
            return f"error {e} {file_stamp(*comfy_api.get_folder_paths(FOLDER))}"
        return json.dumps([sorted(settings.items()), file_stamp(base, *paths, *([donor] if donor else []), dst)],
                          default=str)

    def merge(self, base_name, models, method, density, drop_rate, strength, dropout_seed, max_iterations, stop,
              memory_budget_gib, output_name, clip_vae_from=FROM_BASE):
        base, model_paths, donor = _inputs(base_name, models, clip_vae_from)
        dst = output_path(output_name, comfy_api.get_folder_paths(FOLDER)[0])
        params = MergeParams(method=method, density=density, drop_rate=drop_rate, strength=strength,
                             seed=dropout_seed, max_iterations=max_iterations, stop=stop)
        try:
            params.validate()
        except ValueError as e:
            raise LuneError(f"{method}: {e}") from None
        log.info("Lune merge: %s of %d models onto %s, memory budget %.2f GiB", method, len(model_paths), base_name,
                 memory_budget_gib)
        bar = comfy_api.ProgressBar(100)

        def progress(done: int, total: int, key: str) -> None:
            bar.update_absolute(min(done, total), total)
            comfy_api.throw_exception_if_processing_interrupted()  # Cancel: the partial file is removed

        unet_names = diffusers_unet_names([base, *model_paths, *([donor] if donor else [])])
        merge_models(base, model_paths, dst, params, progress=progress, unet_names=unet_names, clip_vae_from=donor,
                     memory_budget_gib=memory_budget_gib,
                     metadata={"lune.merge.node": json.dumps({"base_name": base_name, "models": models,
                                                              "clip_vae_from": clip_vae_from})})
        out = comfy_api.load_checkpoint_guess_config(dst, output_vae=True, output_clip=True,
                                                   embedding_directory=comfy_api.get_folder_paths("embeddings"))
        return out[:3]
