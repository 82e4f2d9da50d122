"""The real ComfyUI frontend (comfyui-frontend-package 1.32.9 served by ComfyUI 0.3.75, or 1.45.21 served by 0.28.2:
whichever this run's ComfyUI has) with the pack, in Debian's headless chromium driven by playwright-core
(tests/browser/frontend.cjs).

Needs /usr/bin/chromium and playwright-core under $LUNE_ENV_DIR/node: `bash tests/browser/provision_browser.sh`
(idempotent; .ci/provision.sh calls it). Without them the test is skipped locally and fails on CI.

Checks: web/lune.js loads with no console error of ours; every bundled template opens from the template browser
(Templates → Extensions → ComfyUI-Lune → card) with every node type registered and no missing nodes reported — except
the RES4LYF one when RES4LYF is absent, which must report exactly ClownsharKSampler_Beta missing; the frontend offers
every model a template names for download (1.32: the Missing Models dialog; 1.45: the error toast's Errors panel);
the σ schedule plot of a LuneShift node changes (window.__lunePlots and pixels) between shift 1 and 3; with the
language set to Chinese the Lune node titles are translated. Writes artifacts/browser/comfyui-<version>/
lune_frontend.png (a loaded template plus a shift-3 plot) and lune_frontend_zh.png.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tools import build_workflows
from importlib.metadata import PackageNotFoundError, version

from testbed.env import PACK_DIR, PACK_NODE_DIR_NAME, comfyui_path, comfyui_version, make_base_dir
from testbed.server import ComfyServer
from testbed.ui_workflow import VIRTUAL_NODES

pytestmark = [pytest.mark.browser, pytest.mark.comfy]

DRIVER = Path(__file__).with_name("frontend.cjs")
ARTIFACTS = PACK_DIR / "artifacts" / "browser" / f"comfyui-{comfyui_version()}"  # one folder per ComfyUI version
SCREENSHOT = ARTIFACTS / "lune_frontend.png"
SCREENSHOT_ZH = ARTIFACTS / "lune_frontend_zh.png"
FINAL_TEMPLATE = "lune_flux_txt2img"
RES4LYF_NODE = "ClownsharKSampler_Beta"

# Console errors that are frontend/network noise, present with or without this pack (checked on 1.32.9 and 1.45.21
# with an empty custom_nodes): each is (what, regex on the message). Anything else — and anything mentioning Lune —
# fails.
IGNORED_CONSOLE_ERRORS = [
    ("404s for optional user files (user.css, userdata listings, comfy.templates.json)",
     r"^Failed to load resource: the server responded with a status of 404"),
    ("the frontend's own startup TypeError in GraphView load (1.32; happens with no custom nodes too)",
     r"^TypeError: Cannot read properties of undefined \(reading 'id'\)"),
    ("the frontend's own start-up warning logged as an error (1.45; happens with --disable-all-custom-nodes too)",
     r"^ComfyApp graph accessed before initialization$"),
    ("registry look-ups to api.comfy.org refused by the page's CSP / our route block (no network in tests)",
     r"api\.comfy\.org"),
    ("requests to other hosts that the test blocks (fonts, telemetry)", r"net::ERR_FAILED"),
    ("the missing-models dialog's / Errors panel's file-size look-ups of the templates' model URLs (ComfyUI's CSP "
     "allows only 'self'; there is no network in tests anyway)", r"huggingface\.co/|^Error fetching file size"),
]
# 404s we accept: optional user files the frontend probes for. A 404 under the pack's URLs always fails.
# What marks a message as ours: our script's URL or the "[Lune]" prefix web/lune.js logs with. (A registry
# look-up such as api.comfy.org/comfy-nodes/LuneModelLoader/node is the frontend's own request, listed above.)
OURS = re.compile(r"/extensions/ComfyUI-Lune/|lune\.js|\[Lune\]")
IGNORED_404 = re.compile(r"/(user\.css|api/userdata/user\.css|api/userdata\?dir=|api/userdata/comfy\.templates\.json)")


def _node_count(name: str) -> int:
    return len(json.loads((build_workflows.WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"])


def _types(name: str) -> set[str]:
    return {n["type"] for n in json.loads((build_workflows.WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"]}


@pytest.fixture(scope="module")
def frontend_run(tmp_path_factory, browser_bed):
    base = make_base_dir(tmp_path_factory.mktemp("browser-comfy-base"))
    example = comfyui_path() / "input" / build_workflows.EXAMPLE_IMAGE  # what lune_img2img's Load Image shows
    if example.is_file():
        shutil.copyfile(example, base / "input" / build_workflows.EXAMPLE_IMAGE)
    else:
        Image.new("RGB", (96, 96), (90, 120, 200)).save(base / "input" / build_workflows.EXAMPLE_IMAGE)
    settings = json.loads((base / "user" / "default" / "comfy.settings.json").read_text())
    assert settings.get("Comfy.TutorialCompleted") is True
    out = ARTIFACTS  # driver results, the two plot crops and the screenshot stay for a person to look at
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(base)
    try:
        server.wait_ready()
        object_info = server.get("/object_info")
        config = {
            "url": server.url, **browser_bed, "pack": PACK_NODE_DIR_NAME,
            "templates": {name: _node_count(name) for name in sorted(build_workflows.WORKFLOWS)},
            "out_dir": str(out), "screenshot": str(SCREENSHOT), "final_template": FINAL_TEMPLATE,
            "zh": {"workflow": str(build_workflows.WORKFLOWS_DIR / f"{FINAL_TEMPLATE}.json"),
                   "screenshot": str(SCREENSHOT_ZH)},
        }
        (out / "config.json").write_text(json.dumps(config))
        proc = subprocess.run(["node", str(DRIVER), str(out / "config.json")], capture_output=True, text=True,
                              timeout=600)
        results_file = out / "results.json"
        assert results_file.is_file(), f"driver wrote no results:\n{proc.stdout}\n{proc.stderr}"
        results = json.loads(results_file.read_text())
        results["_object_info_types"] = sorted(object_info)
        results["_out"] = str(out)
        yield results
    finally:
        server.stop()


def test_driver_ran_and_extension_loaded(frontend_run):
    r = frontend_run
    assert not r.get("fatal"), r.get("fatal")
    assert r["extensionStatus"] == 200 and r["extensionLoaded"]
    assert not r["pageErrors"], r["pageErrors"]


def test_no_console_errors_from_the_pack(frontend_run):
    unexpected = []
    for msg in frontend_run["console"]:
        text, url = msg["text"], msg["url"]
        ours = OURS.search(text + " " + url)
        if ours or not any(re.search(rx, text) for _, rx in IGNORED_CONSOLE_ERRORS):
            unexpected.append(msg)
    assert not unexpected, unexpected
    bad_http = [e for e in frontend_run["httpErrors"]
                if PACK_NODE_DIR_NAME in e or not (e.startswith("404 ") and IGNORED_404.search(e))]
    assert not bad_http, bad_http


def _missing_nodes_notices(got: dict) -> list[str]:
    """What the frontend showed about missing nodes: 1.32's "missing nodes" dialog, or 1.45's error toast line."""
    notices = [d for d in got["dialogs"] if "missing nodes" in d.lower()]
    toast = (got.get("errors") or {}).get("toast") or ""
    return notices + ([toast] if "nodes are missing" in toast.lower() else [])


@pytest.mark.parametrize("name", sorted(build_workflows.WORKFLOWS))
def test_template_opens_from_the_template_browser(frontend_run, name):
    got = frontend_run["templates"][name]
    assert "error" not in got, got["error"]
    expected_types = sorted(_types(name))
    assert got["types"] == expected_types
    assert got["nodeCount"] == _node_count(name)
    absent = sorted(t for t in expected_types if t not in frontend_run["_object_info_types"]
                    and t not in VIRTUAL_NODES)
    notices = _missing_nodes_notices(got)
    if absent:  # only RES4LYF may be absent from the test bed
        assert absent == [RES4LYF_NODE], absent
        assert got["missing"] == [RES4LYF_NODE]
        assert notices, (got["dialogs"], got.get("errors"))
        assert all(RES4LYF_NODE in d for d in notices if d in got["dialogs"]), got["dialogs"]  # 1.32 names it
    else:
        assert got["missing"] == []
        assert not notices, notices


def _offered_models(got: dict) -> tuple[str, list[str]] | None:
    """Where the frontend reported the missing models: (text, per-model download labels), or None.

    1.32: a "Missing Models" dialog listing "directory / name" with a Download button each. 1.45: an error toast whose
    "Show missing models" / "See Errors" opens the Errors panel: "Missing Models (n)", a "directory (k)" group per
    folder, the file name, and a "Download <name>" button for each file it has a URL for. 1.45 also lists a model
    widget's value that the server does not have (under "Unknown", with "Use from Library" only)."""
    dialogs = [d for d in got["dialogs"] if d.startswith("Missing Models")]
    if dialogs:
        return dialogs[0], []
    panel = (got.get("errors") or {}).get("panel") or ""
    if "Missing Models (" in panel:
        return panel, got["errors"]["downloads"]
    return None


@pytest.mark.parametrize("name", sorted(build_workflows.WORKFLOWS))
def test_missing_models_are_offered_for_download(frontend_run, name):
    """The test bed has none of the real models, so the frontend must offer every downloadable file a template
    names (``properties.models``: directory / name) for download, and nothing else."""
    wf = json.loads((build_workflows.WORKFLOWS_DIR / f"{name}.json").read_text())
    wanted = [m for n in wf["nodes"] for m in n.get("properties", {}).get("models", [])]
    got = frontend_run["templates"][name]
    offered = _offered_models(got)
    if not wanted:
        assert not [d for d in got["dialogs"] if d.startswith("Missing Models")], got["dialogs"]
        assert offered is None or not offered[1], offered
        return
    assert offered, f"{name}: no missing models offered for {[m['name'] for m in wanted]}"
    text, downloads = offered
    if not downloads and "Missing Models (" not in text:  # 1.32 dialog
        for m in wanted:
            assert f"{m['directory']} / {m['name']}" in text, f"{name}: {m['name']} not offered:\n{text}"
        assert text.count("Download") >= len(wanted)
        return
    unique = {(m["directory"], m["name"]) for m in wanted}
    for directory, model in unique:
        assert f"{directory} (" in text and model in text, f"{name}: {model} not offered:\n{text}"
    assert sorted(downloads) == sorted(f"Download {model}" for _, model in unique), downloads


def test_schedule_plot_follows_the_shift_widget(frontend_run):
    r = frontend_run
    assert r["templateBrowserOpenedBy"]
    assert r["plotNode"]["color"] == build_workflows.LUNE_COLOR[0]
    assert r["plotNode"]["bgcolor"] == build_workflows.LUNE_COLOR[1]
    p1, p3 = r["shift1"]["plot"], r["shift3"]["plot"]
    assert p1["type"] == p3["type"] == "LuneShift"
    assert (p1["shift"], p3["shift"]) == (1.0, 3.0) and p1["steps"] == p3["steps"] == 25
    n = p3["steps"]
    for i, (a, b) in enumerate(zip(p1["sigmas"], p3["sigmas"])):
        sigma = 1 - i / n
        assert a == pytest.approx(sigma, abs=1e-9)
        assert b == pytest.approx(3 * sigma / (1 + 2 * sigma), abs=1e-9)
    assert p3["sigmas"][-1] == 0 and len(p3["sigmas"]) == n + 1
    with Image.open(r["shift1"]["file"]) as a, Image.open(r["shift3"]["file"]) as b:
        assert a.size == b.size
        diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).convert("L")
        diff = diff.point(lambda v: 255 if v > 40 else 0)
        changed = diff.histogram()[255]
    assert changed > 150, f"only {changed} pixels changed between shift 1 and shift 3"


def test_loader_plot_draws_the_variants_trained_shift_when_the_widget_says_so(frontend_run):
    """instaflow_txt2img leaves the loader's shift at 0 (the variant's trained shift): drawn at 1.0 for instaflow
    and at 2.0 once the variant is switched to lune (values from the shift input's variant_shifts option)."""
    plots = frontend_run["variantDefaultPlots"]
    assert plots["instaflow"]["shiftWidget"] == plots["lune"]["shiftWidget"] == 0
    assert plots["instaflow"]["shift"] == 1.0 and "instaflow default" in plots["instaflow"]["label"]
    assert plots["lune"]["shift"] == 2.0 and "lune default" in plots["lune"]["label"]


def test_screenshot_written(frontend_run):
    assert SCREENSHOT.is_file()
    with Image.open(SCREENSHOT) as im:
        assert im.size == (1600, 1000)
    plots = frontend_run["finalPlots"]
    assert any(p["type"] == "LuneModelLoader" for p in plots.values())
    assert any(p["type"] == "LuneShift" and p["shift"] == 3.0 for p in plots.values())


def _frontend_version() -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version("comfyui-frontend-package").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ()


def test_chinese_locale_shows_translated_lune_titles(frontend_run):
    """Settings → Language = 中文: the Lune nodes of a loaded template and a freshly added node carry the display
    names of locales/zh/nodeDefs.json; the screenshot shows them. web/lune_i18n.js restores them only where the
    frontend drops pack translations on the lazy language load (1.32) and leaves a frontend that keeps them (1.45)
    alone."""
    zh_defs = json.loads((PACK_DIR / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    r = frontend_run["zh"]
    assert r["locale"] == "zh"
    assert r["freshLuneShiftTitle"] == zh_defs["LuneShift"]["display_name"]
    loader_titles = [n["title"] for n in r["titles"] if n["type"] == "LuneModelLoader"]
    assert loader_titles == [zh_defs["LuneModelLoader"]["display_name"]], r["titles"]
    with Image.open(SCREENSHOT_ZH) as im:
        assert im.size == (1600, 1000)
    i18n = r["luneI18n"]  # which languages web/lune_i18n.js checked, and merged because the frontend dropped ours
    assert "zh" in i18n["checked"], i18n
    if _frontend_version() and _frontend_version() < (1, 33):
        assert i18n["merged"] == ["zh"], i18n
    elif _frontend_version() >= (1, 45):
        assert i18n["merged"] == [], i18n
