"""Model folders, the loaders' file lists and ``[download]`` entries (ComfyUI's model-folder glue)."""
from __future__ import annotations

import os

from ..lune.variants import VARIANTS
from ..lyra.config import PUBLISHED_REPO as LYRA_REPO
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

def download_entry(repo_id: str) -> str:
    """The list entry that fetches ``repo_id`` from Hugging Face: ``"[download] owner/name"``."""
    return f"{DOWNLOAD_PREFIX}{repo_id}"


def entry_repo(name: str) -> str | None:
    """The repo of a ``[download]`` entry, or None for a file name."""
    return name[len(DOWNLOAD_PREFIX):] if name.startswith(DOWNLOAD_PREFIX) else None


def download_root(repo_id: str, folder: str = DOWNLOADS_FOLDER) -> str:
    """Where a downloaded repo lives: ``models/<folder>/<owner>_<name>/`` (listed by its loader afterwards).

    Built from ``models_dir``, not the last registered path of the folder: ComfyUI's main.py appends
    ``output/diffusion_models`` (for model-saving nodes) after ``models/diffusion_models``."""
    return os.path.join(comfy_api.models_dir(), folder, repo_id.replace("/", "_"))


def download_entries() -> list[str]:
    return [download_entry(v.hf_repo) for v in VARIANTS.values() if v.hf_unet_file]


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
    return names + [download_entry(LYRA_REPO)]


def resolve_lyra(name: str) -> str | None:
    """Absolute path of a listed Lyra weights file, or None."""
    path = comfy_api.get_full_path(LYRA_FOLDER, name)
    return path if path and os.path.isfile(path) else None


def lyra_companions(weights: str) -> list[str]:
    """The files the Lyra reader may take the config from: ``<stem>.json`` and ``config.json`` beside the weights."""
    return [os.path.splitext(weights)[0] + ".json", os.path.join(os.path.dirname(weights), "config.json")]
