"""Load Checkpoint (Lune downloads): the stock checkpoint loader plus the pack's ``[download]`` entries for
single-file checkpoints the stock loaders cannot fetch (SQCU's SDXL v-prediction / zero-terminal-SNR base, whose
file name the pack resolves from the repository's listing; SD1.5).

Loading is ComfyUI's own ``load_checkpoint_guess_config``, called exactly as CheckpointLoaderSimple calls it, so the
MODEL, CLIP and VAE are the stock ones (the schedule is set afterwards, e.g. by Lune Discrete Schedule).
"""
from __future__ import annotations

from ..lune.errors import MissingComponentError
from ..lune.stamps import file_stamp
from . import comfy_internals as comfy_api
from . import downloads, paths


def _resolve(ckpt_name: str) -> str:
    entry = paths.find_entry(ckpt_name, paths.CHECKPOINT_ENTRIES)
    if entry is not None:
        return downloads.fetch_entry(entry)[0]
    path = comfy_api.get_full_path("checkpoints", ckpt_name)
    if path is None:
        raise MissingComponentError(f"checkpoint {ckpt_name!r} is not in models/checkpoints. Refresh the node list "
                                    "(press R), copy the file there, or pick a [download] entry.")
    return path


class LuneCheckpointLoader:
    """CheckpointLoaderSimple with ``[download]`` entries."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (paths.list_checkpoints(paths.CHECKPOINT_ENTRIES), {"tooltip": (
                "A checkpoint in models/checkpoints, or a [download] entry: fetches the repository's single-file "
                "checkpoint from Hugging Face into models/checkpoints/<owner>_<repo>/ (resumable: Cancel keeps the "
                "part downloaded; honours HF_HUB_OFFLINE).")}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "Lune"
    DESCRIPTION = ("The stock Load Checkpoint with [download] entries for checkpoints the Missing Models dialog "
                   "cannot fetch; MODEL, CLIP and VAE are built by ComfyUI as usual.")

    @classmethod
    def IS_CHANGED(cls, ckpt_name):
        entry = paths.find_entry(ckpt_name, paths.CHECKPOINT_ENTRIES)
        if entry is not None:
            return downloads.entry_stamp(entry)
        path = comfy_api.get_full_path("checkpoints", ckpt_name)
        return file_stamp(path) if path else ckpt_name

    def load(self, ckpt_name):
        out = comfy_api.load_checkpoint_guess_config(_resolve(ckpt_name), output_vae=True, output_clip=True,
                                                     embedding_directory=comfy_api.get_folder_paths("embeddings"))
        return out[:3]
