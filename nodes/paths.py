"""Model folders and the loader's file list (ComfyUI's folder_paths glue)."""
from __future__ import annotations

import os

import folder_paths

from ..lune.variants import VARIANTS

MODEL_FOLDERS = ("checkpoints", "diffusion_models")
LYRA_FOLDER = "lyra"
DOWNLOAD_PREFIX = "[download] "


def register_folders() -> None:
    """Add ``models/lyra`` (idempotent). Lyra files: model.pt / *.safetensors, config.json beside them."""
    folder_paths.add_model_folder_path(LYRA_FOLDER, os.path.join(folder_paths.models_dir, LYRA_FOLDER))
    paths, exts = folder_paths.folder_names_and_paths[LYRA_FOLDER]
    exts.update(folder_paths.supported_pt_extensions)


def download_entries() -> list[str]:
    return [f"{DOWNLOAD_PREFIX}{v.hf_repo}" for v in VARIANTS.values() if v.hf_unet_file]


def list_models() -> list[str]:
    """Files of models/checkpoints and models/diffusion_models (diffusers ``unet/`` files included), deduplicated,
    then one download entry per known Hugging Face repo."""
    names: list[str] = []
    for folder in MODEL_FOLDERS:
        for name in folder_paths.get_filename_list(folder):
            if name not in names and not name.endswith((".json", ".yaml")):
                names.append(name)
    return names + download_entries()


def resolve_model(name: str) -> str | None:
    """Absolute path of a listed file (checkpoints first, then diffusion_models), or None."""
    for folder in MODEL_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path:
            return path
    return None


def download_root(repo_id: str) -> str:
    """Where a downloaded repo lives: models/diffusion_models/<owner>_<name>/ (listed by the loader afterwards).

    Built from ``models_dir``, not the last registered diffusion_models path: ComfyUI's main.py appends
    ``output/diffusion_models`` (for model-saving nodes) after ``models/diffusion_models``."""
    return os.path.join(folder_paths.models_dir, "diffusion_models", repo_id.replace("/", "_"))
