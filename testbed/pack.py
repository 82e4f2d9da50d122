"""The pack as one package, the way ComfyUI imports a custom node: its folder's ``__init__.py`` with the folder as
the package path. Tests, tools, benchmarks and the in-process ComfyUI all reach it under one name,
``comfyui_lune`` (``from comfyui_lune.lune import formats``), so every class and exception exists once.

ComfyUI loads a custom node folder under a name derived from its path (``load_custom_node``:
``module_path.replace(".", "_x_")``). ``share_with_comfyui`` registers the already-imported package's modules under
that name too, before ComfyUI loads the folder, so ComfyUI's fresh ``__init__`` picks up the same ``nodes``,
``lune`` and ``lyra`` modules instead of importing second copies.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

PACKAGE = "comfyui_lune"
PACK_DIR = Path(__file__).resolve().parents[1]


def import_pack():
    """The pack's package, imported once under PACKAGE (nodes are registered only when ComfyUI is importable)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, PACK_DIR / "__init__.py",
                                                  submodule_search_locations=[str(PACK_DIR)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return module


def comfyui_module_name(custom_node_dir: Path) -> str:
    """The name ComfyUI's ``load_custom_node`` gives a custom node folder (0.3.75 and 0.28.2 alike)."""
    return str(custom_node_dir).replace(".", "_x_")


def share_with_comfyui(custom_node_dir: Path) -> None:
    """Before ComfyUI loads ``custom_node_dir`` (a link to this checkout): import the node modules (ComfyUI is
    configured by now) and register every ``comfyui_lune.*`` module under ComfyUI's name for the folder as well."""
    import_pack()
    importlib.import_module(f"{PACKAGE}.nodes")
    folder = str(custom_node_dir)
    aliases = {comfyui_module_name(Path(p)) for p in (folder, os.path.abspath(folder))}
    for name, module in list(sys.modules.items()):
        if name.startswith(PACKAGE + "."):
            for alias in aliases:
                sys.modules[alias + name[len(PACKAGE):]] = module
