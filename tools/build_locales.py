"""Writes locales/en/nodeDefs.json and locales/en/main.json from the pack's node classes (run:
``python -m tools.build_locales``; it boots the provisioned ComfyUI in-process to import the nodes).

English is generated so it can never drift from the tooltips in the code (a test compares); other languages are
translated by hand in ``locales/<lang>/`` with the same keys, and the same test checks they cover every node, input
and output that English has. Format (ComfyUI 0.3.75 ``GET /i18n``, frontend 1.32): ``nodeDefs.<node id>.display_name |
description | inputs.<name>.name|tooltip | outputs.<index>.name|tooltip``; ``main.json`` holds the node category
(``nodeCategories``) and the template-browser category (``templateWorkflows.category.<pack folder>``).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
LOCALES_DIR = PACK_DIR / "locales"
LANGUAGES = ("en", "zh")
PACK_FOLDER = "ComfyUI-Lune"
CATEGORY = "Lune"


def _inputs(node_class) -> dict:
    spec = node_class.INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            item = {"name": name}
            if opts.get("tooltip"):
                item["tooltip"] = opts["tooltip"]
            out[name] = item
    return out


def _outputs(node_class) -> dict:
    names = getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES
    tips = getattr(node_class, "OUTPUT_TOOLTIPS", None) or [None] * len(names)
    out = {}
    for i, (name, tip) in enumerate(zip(names, tips)):
        item = {"name": name}
        if tip:
            item["tooltip"] = tip
        out[str(i)] = item
    return out


def english_node_defs(class_mappings: dict, display_names: dict) -> dict:
    """nodeDefs for every node id in ``class_mappings`` (the pack's NODE_CLASS_MAPPINGS), from the code."""
    defs = {}
    for node_id, cls in sorted(class_mappings.items()):
        entry = {"display_name": display_names.get(node_id, node_id)}
        if getattr(cls, "DESCRIPTION", ""):
            entry["description"] = cls.DESCRIPTION
        entry["inputs"] = _inputs(cls)
        entry["outputs"] = _outputs(cls)
        defs[node_id] = entry
    return defs


def english_main() -> dict:
    return {"nodeCategories": {CATEGORY: CATEGORY},
            "templateWorkflows": {"category": {PACK_FOLDER: PACK_FOLDER}}}


def render(data: dict) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def pack_mappings(nodes_module) -> tuple[dict, dict]:
    """The pack's node classes and display names out of ComfyUI's merged ``nodes`` tables."""
    ours = {k: v for k, v in nodes_module.NODE_CLASS_MAPPINGS.items()
            if PACK_FOLDER in getattr(v, "RELATIVE_PYTHON_MODULE", "") or v.__module__.startswith(PACK_FOLDER)}
    return ours, {k: nodes_module.NODE_DISPLAY_NAME_MAPPINGS.get(k, k) for k in ours}


def main() -> None:
    from testbed.env import make_base_dir
    from testbed.inprocess import InProcessComfy, configure_args

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-locales-")))
    configure_args(base)
    comfy = InProcessComfy(base)
    mappings, names = pack_mappings(comfy.nodes)
    (LOCALES_DIR / "en").mkdir(parents=True, exist_ok=True)
    (LOCALES_DIR / "en" / "nodeDefs.json").write_text(render(english_node_defs(mappings, names)), encoding="utf-8")
    (LOCALES_DIR / "en" / "main.json").write_text(render(english_main()), encoding="utf-8")


if __name__ == "__main__":
    main()
