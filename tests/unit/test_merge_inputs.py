"""lune.merge.inputs: model lists typed by users (names/globs relative to models/checkpoints) and output names."""
from __future__ import annotations

import pytest

from comfyui_lune.lune.errors import LuneError, MissingComponentError
from comfyui_lune.lune.merge.inputs import output_path, resolve_model_list


@pytest.fixture()
def folder(tmp_path):
    for rel in ("base.safetensors", "a.safetensors", "b.safetensors", "sub/c.safetensors", "sub/d.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    return tmp_path


def test_globs_names_comments_base_excluded_duplicates_once(folder):
    text = "# merge list\n*.safetensors\n\n  sub/d.pt  \na.safetensors\nsub/**/*.safetensors\n"
    got = resolve_model_list(text, [str(folder)], str(folder / "base.safetensors"))
    assert [p[len(str(folder)) + 1:] for p in got] == ["a.safetensors", "b.safetensors", "sub/d.pt",
                                                       "sub/c.safetensors"]


@pytest.mark.parametrize("line,error,words", [
    ("../outside.safetensors", LuneError, "outside the models folder"),
    ("/etc/passwd", LuneError, "outside the models folder"),
    ("sub/../../x.safetensors", LuneError, "outside the models folder"),
    ("nope/*.safetensors", MissingComponentError, "matches no file"),
    ("nope.safetensors", MissingComponentError, "was not found"),
    ("base.safetensors", LuneError, "no model to merge besides the base"),
])
def test_bad_lines_are_refused(folder, line, error, words):
    with pytest.raises(error, match=words):
        resolve_model_list(line, [str(folder)], str(folder / "base.safetensors"))


def test_output_name_is_a_plain_new_file(folder):
    assert output_path("merged", str(folder)) == str(folder / "merged.safetensors")
    assert output_path("merged.safetensors", str(folder)) == str(folder / "merged.safetensors")
    for bad in ("", "sub/x", "..", ".hidden", "a\\b"):
        with pytest.raises(LuneError, match="not a plain file name"):
            output_path(bad, str(folder))
    assert output_path("a", str(folder)) == str(folder / "a.safetensors")  # existing: the merge's recipe decides
