"""Rules of the installed ComfyUI frontend (``comfyui_frontend_package``), read from its own files:

* ``missing_model_rules()``: what the Missing Models dialog accepts (``allowedSources``, ``allowedSuffixes`` in
  ``MissingModelsWarning.vue``) and where a download lands: in the browser the link's ``download`` name is the URL's
  last segment (``useDownload.ts``: ``url.split('/').pop()``), in the desktop app ``<directory>/<name>`` split at
  ``/`` (``ElectronFileDownload.vue``: ``props.label.split('/')``, label ``"<directory> / <name>"``). Read from the
  sources embedded in the frontend's source map (``assets/index-*.js.map``, ``sourcesContent``).
* ``render_messages(messages)``: each string as the frontend's vue-i18n renders it (its own message compiler, run
  in node from ``assets/lib/vue-i18n``), so a translation that vue-i18n would parse (``| { } @``) shows up.
Both raise FrontendRulesError naming the file and what was not found, so a frontend that changed its rules fails the
test that uses them instead of passing silently.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

RENDER_SCRIPT = Path(__file__).with_name("vue_i18n_render.mjs")


class FrontendRulesError(RuntimeError):
    pass


def static_dir() -> Path:
    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).resolve().parent / "static"


def frontend_version() -> str:
    from importlib.metadata import version

    return version("comfyui-frontend-package")


def _sources(name_part: str) -> dict[str, str]:
    """{source path: original text} of every source-map source whose path contains ``name_part``."""
    found: dict[str, str] = {}
    for map_file in sorted(glob.glob(str(static_dir() / "assets" / "*.js.map"))):
        try:
            with open(map_file, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        for src, text in zip(data.get("sources", []), data.get("sourcesContent") or []):
            if text and name_part in src:
                found[src] = text
    return found


def _one_source(name_part: str) -> str:
    found = _sources(name_part)
    if not found:
        raise FrontendRulesError(f"no source {name_part!r} in the source maps of frontend {frontend_version()} "
                                 f"({static_dir()}): the rule moved; re-read the frontend and update this module")
    return next(iter(found.values()))


def _string_list(text: str, name: str, where: str) -> tuple[str, ...]:
    m = re.search(rf"const {name}\s*=\s*\[([^\]]*)\]", text)
    if not m:
        raise FrontendRulesError(f"{where}: no `const {name} = [...]` in frontend {frontend_version()}")
    return tuple(a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", m.group(1)))


@dataclass(frozen=True)
class MissingModelRules:
    allowed_sources: tuple[str, ...]
    allowed_suffixes: tuple[str, ...]
    browser_saves_as: str  # "url basename" (1.32 useDownload: url.split('/').pop()) or "name" (1.45: model.name)
    source: str            # the frontend files the rules were read from

    def problems(self, model: dict) -> list[str]:
        """Why the dialog would refuse or misplace a ``properties.models`` row (empty: a clean one-click row)."""
        name, url, directory = model.get("name", ""), model.get("url", ""), model.get("directory", "")
        out = []
        if not url.startswith(self.allowed_sources):
            out.append(f"url {url!r} is not from {self.allowed_sources}")
        if not name.endswith(self.allowed_suffixes):
            out.append(f"name {name!r} does not end with {self.allowed_suffixes} (the dialog shows an error row)")
        if "/" in name:  # 1.32 desktop: label.split('/') keeps the first part; a browser turns '/' into '_'
            out.append(f"name {name!r} has a folder: the dialog saves it flat, not where the loader looks")
        if self.browser_saves_as == "url basename" and url.split("/")[-1] != name:
            out.append(f"the browser saves {url.split('/')[-1]!r}, not {name!r}")
        if not directory:
            out.append("no directory")
        return out


def missing_model_rules() -> MissingModelRules:
    """The installed frontend's rules: the 1.32 dialog (MissingModelsWarning.vue) or the 1.45 panel
    (platform/missingModel/missingModelDownload.ts)."""
    if _sources("MissingModelsWarning.vue"):
        dialog = _one_source("MissingModelsWarning.vue")
        download = _one_source("composables/useDownload.ts")
        where = "MissingModelsWarning.vue + useDownload.ts"
        if "url.split('/').pop()" not in download:
            raise FrontendRulesError(f"{where}: the browser download name rule changed in {frontend_version()}")
        return MissingModelRules(_string_list(dialog, "allowedSources", where),
                                 _string_list(dialog, "allowedSuffixes", where), "url basename", where)
    panel = _one_source("missingModel/missingModelDownload.ts")
    where = "missingModelDownload.ts"
    if "link.download = model.name" not in panel:
        raise FrontendRulesError(f"{where}: the browser download name rule changed in {frontend_version()}")
    return MissingModelRules(_string_list(panel, "ALLOWED_SOURCES", where),
                             _string_list(panel, "ALLOWED_SUFFIXES", where), "name", where)


# ------------------------------------------------------------------------------------------------ vue-i18n

def _vue_i18n_entry() -> tuple[Path, str, bool]:
    """(module file, name under which it exports createI18n, whether it imports a bare "vue" that needs a shim).

    1.32 ships vue-i18n as ``assets/lib/vue-i18n/dist/*.js`` (imports "vue"); 1.45 bundles it into a chunk
    (``assets/vendor-i18n-*.js``, relative imports) that exports ``createI18n as <letter>``."""
    lib = sorted(glob.glob(str(static_dir() / "assets" / "lib" / "vue-i18n" / "**" / "*.js"), recursive=True))
    if lib:
        return Path(lib[0]), "createI18n", True
    for chunk in sorted(glob.glob(str(static_dir() / "assets" / "*.js"))):
        with open(chunk, encoding="utf-8", errors="replace") as f:
            text = f.read()
        m = re.search(r"export\s*\{[^}]*\bcreateI18n as (\w+)", text)
        if m and "createCompileError" in text:  # the message compiler is in the same chunk
            return Path(chunk), m.group(1), False
    raise FrontendRulesError(f"frontend {frontend_version()} ships no vue-i18n module in {static_dir()}")


def _vue_module() -> Path:
    candidates = sorted(glob.glob(str(static_dir() / "assets" / "lib" / "vue" / "**" / "*.js"), recursive=True))
    if not candidates:
        raise FrontendRulesError(f"frontend {frontend_version()} ships no assets/lib/vue module in {static_dir()}")
    return Path(candidates[0])


def render_messages(messages: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    """({key: rendered string or {"error": …}}, vue-i18n warnings) for plain message strings."""
    node = shutil.which("node")
    if node is None:
        raise FrontendRulesError("node is not on PATH (it runs the frontend's vue-i18n)")
    module, export, needs_vue = _vue_i18n_entry()
    with tempfile.TemporaryDirectory(prefix="lune-vue-i18n-") as work:
        if needs_vue:  # a copy beside a node_modules/vue that re-exports the frontend's own vue build
            shutil.copyfile(module, os.path.join(work, "vi.mjs"))
            module = Path(work) / "vi.mjs"
            vue = Path(work) / "node_modules" / "vue"
            vue.mkdir(parents=True)
            (vue / "package.json").write_text(json.dumps({"name": "vue", "type": "module", "exports": "./index.js"}))
            (vue / "index.js").write_text(f"export * from {json.dumps(_vue_module().as_uri())};\n")
        proc = subprocess.run([node, str(RENDER_SCRIPT), module.as_uri(), export], input=json.dumps(messages),
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise FrontendRulesError(f"rendering with the frontend's vue-i18n failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    return data["rendered"], data["warnings"]
