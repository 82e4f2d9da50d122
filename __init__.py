"""ComfyUI-Lune: Lune / Lune-Flux / Sol flow-matching SD1.5 models and the Lyra CLIP+T5 encoder for ComfyUI.

Importable without ComfyUI (the library packages ``lune`` and ``lyra`` need only torch): when ``comfy`` is
absent, no nodes are registered and nothing fails.
"""
import importlib.util
import logging

WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

if importlib.util.find_spec("comfy") is not None and __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, setup

    setup()
else:
    logging.getLogger("lune").debug("ComfyUI not found: ComfyUI-Lune registers no nodes")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
