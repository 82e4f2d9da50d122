"""Load Checkpoint (Lune downloads): the stock checkpoint loader plus the pack's ``[download]`` entries for
single-file checkpoints the stock loaders cannot fetch (SQCU's SDXL v-prediction / zero-terminal-SNR base, whose
file name the pack resolves from the repository's listing; SD1.5).

Loading is ComfyUI's own ``load_checkpoint_guess_config``, called exactly as CheckpointLoaderSimple calls it, so the
MODEL, CLIP and VAE are the stock ones (the schedule is set afterwards, e.g. by Lune Discrete Schedule).
"""
from __future__ import annotations

from ..lune.errors import MissingComponentError
from . import comfy_internals as comfy_api
from . import downloads, paths


class LuneCheckpointLoader:
    """CheckpointLoaderSimple with ``[download]`` entries."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (paths.list_checkpoints(paths.CHECKPOINT_ENTRIES), {"tooltip": (
                "A checkpoint in models/checkpoints, or a [download] entry. " + downloads.entries_tooltip(
                    "checkpoints", "A [download] entry fetches the repository's single-file checkpoint"))}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "Lune"
    DESCRIPTION = ("The stock Load Checkpoint with [download] entries for checkpoints the Missing Models dialog "
                   "cannot fetch; MODEL, CLIP and VAE are built by ComfyUI as usual.")

    @classmethod
    def IS_CHANGED(cls, ckpt_name):
        return downloads.choice_stamp(ckpt_name, paths.CHECKPOINT_ENTRIES, paths.resolve_checkpoint)

    def load(self, ckpt_name):
        missing = MissingComponentError(f"checkpoint {ckpt_name!r} is not in models/checkpoints. Refresh the node "
                                        "list (press R), copy the file there, or pick a [download] entry.")
        path = downloads.choice_files(ckpt_name, paths.CHECKPOINT_ENTRIES, paths.resolve_checkpoint, missing)[0]
        out = comfy_api.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                     embedding_directory=comfy_api.get_folder_paths("embeddings"))
        return out[:3]
