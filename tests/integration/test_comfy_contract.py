"""The contract with ComfyUI: every internal the pack uses is named in nodes/comfy_internals.py, binds on this
ComfyUI version, and is reached from nowhere else. A future ComfyUI release that drops or moves one breaks this
test by name (README, "Upgrading ComfyUI")."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

PACK = Path(__file__).resolve().parents[2]
BOUNDARY = PACK / "nodes" / "comfy_internals.py"
# Top-level modules of ComfyUI that are not the documented custom-node API (``comfy_api`` is documented).
COMFY_INTERNAL_IMPORT = re.compile(
    r"^\s*(import|from)\s+(comfy(\.|\s)|comfy_extras|folder_paths|execution|server|nodes\b|latent_preview|"
    r"node_helpers|comfy_execution)", re.M)


@pytest.fixture(scope="module")
def boundary(comfy):
    return sys.modules[f"{comfy.nodes.NODE_CLASS_MAPPINGS['LuneModelLoader'].__module__.rpartition('.')[0]}"
                       ".comfy_internals"]


def test_every_internal_binds_on_this_version(boundary):
    version = boundary.comfyui_version()
    missing = [f"{i.name} ({' or '.join(i.paths)})" for i in boundary.INTERNALS.values()
               if i.required and boundary.bound(i.name) is None]
    assert not missing, f"ComfyUI {version} lacks: {missing}"
    for internal in boundary.INTERNALS.values():
        assert internal.why, internal.name


def test_reference_lists_exactly_the_boundary(boundary):
    """docs/reference.md's table of ComfyUI internals is the boundary module's list, row for row."""
    text = (PACK / "docs" / "reference.md").read_text(encoding="utf-8")
    section = text.split("### ComfyUI internals the pack uses", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \| (.+?) \|", section, re.M)
    expected = [(i.name, " or ".join(f"`{p}`" for p in i.paths)) for i in boundary.INTERNALS.values()]
    assert documented == expected


def test_bound_objects_are_the_ones_comfyui_uses(boundary):
    """What the pack registers into must be ComfyUI's live objects, not copies (the stock KSampler reads them)."""
    import comfy.samplers
    import comfy.sd

    assert boundary.KSampler.SAMPLERS is comfy.samplers.KSampler.SAMPLERS
    assert boundary.SCHEDULER_HANDLERS is comfy.samplers.SCHEDULER_HANDLERS
    assert boundary.load_state_dict_guess_config is comfy.sd.load_state_dict_guess_config


def test_version_features_detected(boundary):
    """0.28.x loaders take disable_dynamic and CLIP loads in its constructor; 0.3.75 has neither."""
    major_minor = tuple(int(p) for p in boundary.comfyui_version().split(".")[:2])
    expected = major_minor >= (0, 4)
    assert boundary.DYNAMIC_LOADERS is expected
    assert boundary.CLIP_LOADS_STATE_DICT is expected


def test_no_comfy_internal_import_outside_the_boundary():
    offenders = []
    for path in sorted(PACK.glob("*.py")) + sorted((PACK / "nodes").rglob("*.py")) + \
            sorted((PACK / "lune").rglob("*.py")) + sorted((PACK / "lyra").rglob("*.py")):
        if path == BOUNDARY:
            continue
        for match in COMFY_INTERNAL_IMPORT.finditer(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACK)}: {match.group(0).strip()}")
    assert not offenders, offenders


def test_missing_internal_fails_by_name(boundary):
    with pytest.raises(boundary.MissingComfyInternal, match="comfy.sd.no_such_loader"):
        boundary._bind("no_such_loader", "comfy.sd.no_such_loader", why="test")
    boundary.INTERNALS.pop("no_such_loader")
    assert boundary._bind("optional_thing", "comfy.sd.no_such_thing", why="test", required=False) is None
    boundary.INTERNALS.pop("optional_thing")
