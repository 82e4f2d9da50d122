"""Model folders, the loaders' file lists and ``[download]`` entries (ComfyUI's model-folder glue)."""
from __future__ import annotations

import os

from ..lune import download_entries as entries
from ..lune.download_rules import FIXED, DownloadEntry
from ..lyra.config import PUBLISHED_FILES as LYRA_FILES
from ..lyra.config import PUBLISHED_REPO as LYRA_REPO
from ..lyra.xl_spec import PUBLISHED_XL
from . import comfy_internals as comfy_api

MODEL_FOLDERS = ("checkpoints", "diffusion_models")
DOWNLOADS_FOLDER = "diffusion_models"
LYRA_FOLDER = "lyra"
LYRA_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt", ".bin")
DOWNLOAD_PREFIX = "[download] "


def register_folders() -> None:
    """Add ``models/lyra`` (idempotent). Lyra files: model.pt / *.safetensors, config.json beside them."""
    comfy_api.add_model_folder_path(LYRA_FOLDER, os.path.join(comfy_api.models_dir(), LYRA_FOLDER))
    comfy_api.folder_extensions(LYRA_FOLDER).update(comfy_api.supported_pt_extensions)


# ------------------------------------------------------------------------------------------------ [download] entries

# Load Lyra: model.pt + config.json (the Lyra reader takes the config from beside the weights).
LYRA_ENTRY = DownloadEntry(LYRA_REPO, LYRA_FOLDER, FIXED, tuple(LYRA_FILES), what="Lyra (config.json + model.pt)")
# ... and the SDXL Lyras (config first: downloads return the files in this order).
LYRA_ENTRIES = (LYRA_ENTRY, *(DownloadEntry(repo, LYRA_FOLDER, FIXED, tuple(files), what="Lyra-XL")
                              for repo, files in PUBLISHED_XL.items()))
MODEL_ENTRIES = entries.MODEL_ENTRIES                 # Load Lune Model's model_name
DONOR_ENTRIES = (entries.SD15_COMPANION,)             # Load Lune Model's clip_vae_from
CHECKPOINT_ENTRIES = entries.CHECKPOINT_ENTRIES       # Load Checkpoint (Lune downloads)


def find_entry(name: str, among: tuple[DownloadEntry, ...]) -> DownloadEntry | None:
    """The ``[download]`` entry a list value names, or None for a file name."""
    return entries.by_label(name, among) if name.startswith(DOWNLOAD_PREFIX) else None


def download_root(repo_id: str, folder: str = DOWNLOADS_FOLDER) -> str:
    """Where a downloaded repo lives: ``models/<folder>/<owner>_<name>/`` (listed by its loader afterwards).

    Built from ``models_dir``, not the last registered path of the folder: ComfyUI's main.py appends
    ``output/diffusion_models`` (for model-saving nodes) after ``models/diffusion_models``."""
    return os.path.join(comfy_api.models_dir(), folder, repo_id.replace("/", "_"))


def download_entries() -> list[str]:
    return entries.labels(MODEL_ENTRIES)


# ------------------------------------------------------------------------------------------------ Lune models

def list_models() -> list[str]:
    """Files of models/checkpoints and models/diffusion_models (diffusers ``unet/`` files included), deduplicated,
    then one download entry per known Hugging Face repo."""
    names: list[str] = []
    for folder in MODEL_FOLDERS:
        for name in comfy_api.get_filename_list(folder):
            if name not in names and not name.endswith((".json", ".yaml")):
                names.append(name)
    return names + download_entries()


def resolve_checkpoint(name: str) -> str | None:
    """Absolute path of a file listed in models/checkpoints, or None."""
    return comfy_api.get_full_path("checkpoints", name)


def resolve_model(name: str) -> str | None:
    """Absolute path of a listed file (checkpoints first, then diffusion_models), or None."""
    for folder in MODEL_FOLDERS:
        path = comfy_api.get_full_path(folder, name)
        if path:
            return path
    return None


# ------------------------------------------------------------------------------------------------ Lyra

def list_lyra() -> list[str]:
    """Weight files in models/lyra (config.json beside them), then the Hugging Face download entry."""
    names = [n for n in comfy_api.get_filename_list(LYRA_FOLDER) if n.lower().endswith(LYRA_WEIGHT_SUFFIXES)]
    return names + entries.labels(LYRA_ENTRIES)


def resolve_lyra(name: str) -> str | None:
    """Absolute path of a listed Lyra weights file, or None."""
    path = comfy_api.get_full_path(LYRA_FOLDER, name)
    return path if path and os.path.isfile(path) else None


def lyra_companions(weights: str) -> list[str]:
    """The files the Lyra readers may take the config from: ``<stem>.json`` and ``config.json`` beside the weights,
    ``config.json`` one folder up (an SDXL Lyra's ``weights/`` layout)."""
    folder = os.path.dirname(weights)
    return [os.path.splitext(weights)[0] + ".json", os.path.join(folder, "config.json"),
            os.path.join(os.path.dirname(folder), "config.json")]


# ------------------------------------------------------------------------------------------------ checkpoints

def list_checkpoints(among: tuple[DownloadEntry, ...]) -> list[str]:
    """Files of models/checkpoints, then the given download entries (clip_vae_from, Load Checkpoint)."""
    return list(comfy_api.get_filename_list("checkpoints")) + entries.labels(among)
