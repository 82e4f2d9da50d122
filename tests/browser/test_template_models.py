"""Bundled templates opened in the real ComfyUI frontend with none of their models installed
(tests/browser/template_models.cjs drives Debian's headless chromium via playwright-core, like frontend.cjs):

* lune_lyra and lune_flux_txt2img (the templates whose models the Missing Models dialog used to refuse or misplace):
  no dialog row carries an error ("Only allowed suffixes …", "Download not allowed …", "Invalid directory …"), and
  every pack loader shows its ``[download]`` entry selected, as one of the widget's options;
* web/lune.js colours every node of the pack: ``window.__luneNodes`` equals the pack's nodes in ``/object_info``.

Needs /usr/bin/chromium and playwright-core (``bash tests/browser/provision_browser.sh``); skipped locally without
them, failed on CI.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tools import build_workflows
from testbed.env import PACK_DIR, PACK_NODE_DIR_NAME, make_base_dir
from testbed.server import ComfyServer

pytestmark = [pytest.mark.browser, pytest.mark.comfy]

DRIVER = Path(__file__).with_name("template_models.cjs")
ARTIFACTS = PACK_DIR / "artifacts" / "browser"
TEMPLATES = ("lune_lyra", "lune_flux_txt2img")
DIALOG_ERRORS = ("Only allowed suffixes", "Download not allowed", "Invalid directory")
PACK_LOADER_WIDGETS = {"LuneModelLoader": {"model_name", "clip_vae_from"}, "LyraLoader": {"lyra_name"},
                       "LuneCheckpointLoader": {"ckpt_name"}}


@pytest.fixture(scope="module")
def opened(tmp_path_factory, browser_bed):
    base = make_base_dir(tmp_path_factory.mktemp("template-models-base"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(base)
    try:
        server.wait_ready()
        info = server.get("/object_info")
        counts = {name: len(json.loads((build_workflows.WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"])
                  for name in TEMPLATES}
        config = {"url": server.url, **browser_bed, "pack": PACK_NODE_DIR_NAME, "templates": counts,
                  "out_dir": str(ARTIFACTS)}
        (ARTIFACTS / "template_models_config.json").write_text(json.dumps(config))
        proc = subprocess.run(["node", str(DRIVER), str(ARTIFACTS / "template_models_config.json")],
                              capture_output=True, text=True, timeout=600)
        out = ARTIFACTS / "template_models.json"
        assert out.is_file(), f"driver wrote no results:\n{proc.stdout}\n{proc.stderr}"
        results = json.loads(out.read_text())
        results["_pack_nodes"] = sorted(k for k, v in info.items()
                                        if v.get("python_module", "").endswith(PACK_NODE_DIR_NAME))
        yield results
    finally:
        server.stop()


def test_driver_ran(opened):
    assert not opened.get("fatal"), opened.get("fatal")


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_error_rows_and_the_download_entries_are_selected(opened, name):
    got = opened["templates"][name]
    assert "error" not in got, got["error"]
    print(json.dumps(got, indent=1))
    for dialog in got["dialogs"]:
        assert not any(e in dialog for e in DIALOG_ERRORS), dialog
    seen = 0
    for node in got["loaders"]:
        for widget in node["widgets"]:
            if widget["name"] in PACK_LOADER_WIDGETS.get(node["type"], ()):
                seen += 1
                assert widget["value"].startswith("[download] ") and widget["listed"] is True, (node, widget)
    assert seen >= 2, got["loaders"]


def test_lune_js_colours_every_pack_node(opened):
    assert opened["luneNodes"] == opened["_pack_nodes"]
    for node_type, (color, bgcolor) in opened["colours"].items():
        assert (color, bgcolor) == build_workflows.LUNE_COLOR, node_type
