"""Which ComfyUI this run tests (a provisioned version or a user's own install), where it and RES4LYF live, and a
throw-away ComfyUI base directory with the pack linked in."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NODE_DIR_NAME = "ComfyUI-Lune"
ENV_DIR = Path(os.environ.get("LUNE_ENV_DIR", Path.home() / ".cache" / "comfyui-lune")).expanduser()
MODEL_SUBDIRS = ("checkpoints", "diffusion_models", "lyra", "text_encoders", "vae", "embeddings", "loras")
DEFAULT_COMFYUI_VERSION = "0.3.75"
# The RES4LYF commit that pairs with each tested ComfyUI release line (RES4LYF follows ComfyUI's internals closely:
# commits after a91beac need a ComfyUI newer than 0.3.75; 022c873 is RES4LYF 1.1.0, current with 0.28).
RES4LYF_COMMITS = {"0.3": "a91beac", "0.28": "022c873"}
RES4LYF_NODE_DIR_NAME = "RES4LYF"


def selected_version() -> str:
    """The ComfyUI version this run is for: ``LUNE_COMFYUI_VERSION`` (set by ``$LUNE_ENV_DIR/env-<version>.sh``),
    else 0.3.75."""
    return os.environ.get("LUNE_COMFYUI_VERSION") or DEFAULT_COMFYUI_VERSION


def comfyui_dir() -> Path:
    """Where this run's ComfyUI is (it may not exist): ``COMFYUI_PATH`` (a user's own install, or the one an
    ``env-<version>.sh`` names), else ``$LUNE_ENV_DIR/ComfyUI-<selected_version()>``."""
    explicit = os.environ.get("COMFYUI_PATH")
    return Path(explicit).expanduser() if explicit else ENV_DIR / f"ComfyUI-{selected_version()}"


def comfyui_path() -> Path:
    """:func:`comfyui_dir`, which must hold a ComfyUI."""
    path = comfyui_dir()
    if not (path / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {path}: run `bash .ci/provision.sh` (or `make env`) first, "
                           "or set COMFYUI_PATH to an existing install")
    return path


def comfyui_version(path: Path | None = None) -> str:
    """The version the ComfyUI at ``path`` (default :func:`comfyui_dir`) declares in its ``comfyui_version.py``;
    :func:`selected_version` when it has none."""
    match = None
    version_file = (path or comfyui_dir()) / "comfyui_version.py"
    if version_file.is_file():
        match = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", version_file.read_text(encoding="utf-8"))
    return match.group(1) if match else selected_version()


def release_line(version: str) -> str:
    """``"0.28.2"`` → ``"0.28"``."""
    return ".".join(version.split(".")[:2])


def res4lyf_commit() -> str | None:
    """The RES4LYF commit for this run's ComfyUI, or None when no tested commit pairs with it."""
    return RES4LYF_COMMITS.get(release_line(comfyui_version()))


def res4lyf_path() -> Path | None:
    """A RES4LYF checkout for the tests that run it: ``RES4LYF_PATH``, else ``$LUNE_ENV_DIR/RES4LYF-<commit>`` (the
    commit that pairs with this run's ComfyUI) when present. RES4LYF is published on GitHub only; ``.ci/provision.sh``
    unpacks it from a local git repository and never fetches it unless asked (README, "Development")."""
    explicit = os.environ.get("RES4LYF_PATH")
    commit = res4lyf_commit()
    if explicit:
        path = Path(explicit)
    elif commit:
        path = ENV_DIR / f"RES4LYF-{commit}"
    else:
        return None
    return path if (path / "__init__.py").is_file() else None


def res4lyf_skip_reason() -> str:
    version, commit = comfyui_version(), res4lyf_commit()
    if commit is None:
        return (f"RES4LYF not available: no tested RES4LYF commit pairs with ComfyUI {version} "
                f"(tested: {RES4LYF_COMMITS}); set RES4LYF_PATH to a checkout that works with it")
    return (f"RES4LYF not available: set RES4LYF_PATH to a RES4LYF checkout at commit {commit} (the one for "
            f"ComfyUI {version}), or give .ci/provision.sh a RES4LYF git repository (RES4LYF_GIT), then `make env`")


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
