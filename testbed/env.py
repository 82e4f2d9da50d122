"""Where the provisioned ComfyUI lives, and a throw-away ComfyUI base directory with the pack linked in."""
from __future__ import annotations

import json
import os
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NODE_DIR_NAME = "ComfyUI-Lune"
ENV_DIR = Path(os.environ.get("LUNE_ENV_DIR", Path.home() / ".cache" / "comfyui-lune"))
MODEL_SUBDIRS = ("checkpoints", "diffusion_models", "lyra", "text_encoders", "vae", "embeddings", "loras")


def comfyui_path() -> Path:
    """COMFYUI_PATH (a user's own install) or the pinned 0.3.75 provisioned under LUNE_ENV_DIR."""
    path = Path(os.environ.get("COMFYUI_PATH") or ENV_DIR / "ComfyUI-0.3.75")
    if not (path / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {path}: run `bash .ci/provision.sh` (or `make env`) first, "
                           "or set COMFYUI_PATH to an existing install")
    return path


RES4LYF_COMMIT = "a91beac"  # the RES4LYF commit that pairs with ComfyUI 0.3.75 (later ones need a newer ComfyUI)
RES4LYF_NODE_DIR_NAME = "RES4LYF"


def res4lyf_path() -> Path | None:
    """A RES4LYF checkout for the tests that run it: ``RES4LYF_PATH``, else ``$LUNE_ENV_DIR/RES4LYF-a91beac`` when
    present. RES4LYF is published on GitHub only, so the test bed never fetches it (README, "Development")."""
    explicit = os.environ.get("RES4LYF_PATH")
    path = Path(explicit) if explicit else ENV_DIR / f"RES4LYF-{RES4LYF_COMMIT}"
    return path if (path / "__init__.py").is_file() else None


def res4lyf_skip_reason() -> str:
    return ("RES4LYF not available: set RES4LYF_PATH to a RES4LYF checkout at commit "
            f"{RES4LYF_COMMIT} (the one for ComfyUI 0.3.75) and re-run `make env`")


def make_base_dir(base: Path, with_res4lyf: bool = False) -> Path:
    """A ComfyUI --base-directory: models/, input/, output/, temp/, user/ and custom_nodes/ComfyUI-Lune → this repo
    (and custom_nodes/RES4LYF → ``res4lyf_path()`` when asked and available).

    Using a base directory keeps a user's own install (COMFYUI_PATH) untouched.
    """
    for sub in ("custom_nodes", "input", "output", "temp", "user/default", *(f"models/{m}" for m in MODEL_SUBDIRS)):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NODE_DIR_NAME
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    res4lyf = res4lyf_path() if with_res4lyf else None
    if res4lyf is not None and not (base / "custom_nodes" / RES4LYF_NODE_DIR_NAME).exists():
        (base / "custom_nodes" / RES4LYF_NODE_DIR_NAME).symlink_to(res4lyf.resolve(), target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    return base


def place_model(base: Path, folder: str, src: Path, name: str | None = None) -> str:
    """Symlink a fixture file or folder into models/<folder>/; returns the name ComfyUI lists it under."""
    dest = base / "models" / folder / (name or src.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    return dest.relative_to(base / "models" / folder).as_posix()
