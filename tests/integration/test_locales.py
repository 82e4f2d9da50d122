"""Translations (locales/en, locales/zh) as the real ComfyUI 0.3.75 serves them at ``GET /api/i18n``.

English is generated from the node classes by ``tools/build_locales.py`` (no drift allowed); Chinese is written by
hand and must cover every node, input and output the English has. Every locale file is valid UTF-8 JSON: one bad file
breaks ``/i18n`` for every pack.
"""
from __future__ import annotations

import json

import pytest

from tools import build_locales

pytestmark = pytest.mark.comfy

LOCALE_FILES = sorted(build_locales.LOCALES_DIR.glob("*/*.json"))


@pytest.mark.parametrize("path", LOCALE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_locale_files_are_utf8_json(path):
    json.loads(path.read_bytes().decode("utf-8"))


def test_languages_present():
    assert {p.parent.name for p in LOCALE_FILES} == set(build_locales.LANGUAGES)
    for lang in build_locales.LANGUAGES:
        assert {p.name for p in LOCALE_FILES if p.parent.name == lang} == {"main.json", "nodeDefs.json"}


def test_english_equals_the_generator_output(comfy):
    mappings, names = build_locales.pack_mappings(comfy.nodes)
    expected = build_locales.render(build_locales.english_node_defs(mappings, names))
    path = build_locales.LOCALES_DIR / "en" / "nodeDefs.json"
    assert path.read_text(encoding="utf-8") == expected, (
        "locales/en/nodeDefs.json drifted from the node classes: run `python -m tools.build_locales`")
    main = build_locales.LOCALES_DIR / "en" / "main.json"
    assert main.read_text(encoding="utf-8") == build_locales.render(build_locales.english_main())


@pytest.fixture(scope="module")
def served(comfy_server):
    return comfy_server.get("/api/i18n"), comfy_server.get("/object_info")


def pack_node_ids(object_info: dict) -> list[str]:
    return sorted(k for k, v in object_info.items() if v.get("python_module", "").endswith("ComfyUI-Lune"))


@pytest.mark.parametrize("lang", build_locales.LANGUAGES)
def test_every_pack_node_is_translated_as_served(served, lang):
    i18n, info = served
    ids = pack_node_ids(info)
    assert len(ids) >= 7, ids
    defs = i18n[lang]["nodeDefs"]
    problems = []
    for node_id in ids:
        entry = defs.get(node_id)
        if not entry:
            problems.append(f"{lang}: {node_id} missing")
            continue
        if not entry.get("display_name", "").strip():
            problems.append(f"{lang}: {node_id} has no display_name")
        inputs = {**info[node_id]["input"].get("required", {}), **info[node_id]["input"].get("optional", {})}
        for name, item in entry.get("inputs", {}).items():
            if name not in inputs:
                problems.append(f"{lang}: {node_id}.inputs.{name} is not an input of the node")
            elif not item.get("name", "").strip():
                problems.append(f"{lang}: {node_id}.inputs.{name} has no name")
        for name in inputs:  # complete: every input has a translated name (and a tooltip where English has one)
            if name not in entry.get("inputs", {}):
                problems.append(f"{lang}: {node_id}.inputs.{name} not translated")
            elif inputs[name][1:] and isinstance(inputs[name][1], dict) and inputs[name][1].get("tooltip") \
                    and not entry["inputs"][name].get("tooltip", "").strip():
                problems.append(f"{lang}: {node_id}.inputs.{name} has no tooltip")
        outputs = info[node_id]["output"]
        for index in entry.get("outputs", {}):
            if not index.isdigit() or int(index) >= len(outputs):
                problems.append(f"{lang}: {node_id}.outputs.{index} is not an output of the node")
    assert not problems, "\n".join(problems)


def test_chinese_is_actually_chinese(served):
    i18n, info = served
    for node_id in pack_node_ids(info):
        name = i18n["zh"]["nodeDefs"][node_id]["display_name"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in name), f"{node_id}: zh display_name {name!r} is not Chinese"
        assert name != i18n["en"]["nodeDefs"][node_id]["display_name"]


def test_category_and_template_category_labels(served):
    i18n, _ = served
    for lang in build_locales.LANGUAGES:
        assert i18n[lang]["nodeCategories"]["Lune"].strip()
        assert i18n[lang]["templateWorkflows"]["category"]["ComfyUI-Lune"].strip()


# ------------------------------------------------------------------------------------ the frontend's message syntax

# vue-i18n's message syntax: `|` separates plural branches, `{…}` is a placeholder, `@:`/`@.` a linked message, and
# `$` is reserved by it too (vue-i18n docs, "Message Format Syntax": special characters need the literal form
# {'…'}). The pack writes no message that needs them.
MESSAGE_SYNTAX = set("|{}@$")


def _strings(data, path=""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, f"{path}.{key}" if path else key)
    elif isinstance(data, str):
        yield path, data


def _all_locale_strings() -> dict[str, str]:
    out = {}
    for path in LOCALE_FILES:
        for key, text in _strings(json.loads(path.read_text(encoding="utf-8"))):
            out[f"{path.parent.name}/{path.name}:{key}"] = text
    return out


def _rendering_problems(messages: dict[str, str]) -> list[str]:
    from testbed.frontend_rules import render_messages

    rendered, warnings = render_messages(messages)
    problems = [f"{key}: {text!r} renders as {rendered[key]!r}" for key, text in messages.items()
                if rendered[key] != text]
    return problems + [f"vue-i18n warned: {w}" for w in warnings]


def test_the_frontends_message_compiler_breaks_a_string_with_a_bar():
    """The check below can fail: the measured bug, "largest |τ|" shown as "τ"."""
    problems = _rendering_problems({"bad": "fraction kept (largest |τ|).", "good": "fraction kept."})
    assert len(problems) == 1 and problems[0].startswith("bad:"), problems


def test_every_locale_string_renders_unchanged_in_the_frontend():
    messages = _all_locale_strings()
    assert len(messages) > 100, len(messages)
    syntax = [f"{key}: {text!r}" for key, text in messages.items() if MESSAGE_SYNTAX & set(text)]
    assert not syntax, "vue-i18n message syntax (| { } @ $) in locale strings:\n" + "\n".join(syntax)
    problems = _rendering_problems(messages)
    assert not problems, "\n".join(problems)
