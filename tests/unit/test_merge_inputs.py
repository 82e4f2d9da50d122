"""lune.merge.inputs: model lists typed by users (names/globs relative to models/checkpoints) and output names."""
from __future__ import annotations

import ntpath
import os
import posixpath

import pytest

from comfyui_lune.lune.errors import LuneError, MissingComponentError
from comfyui_lune.lune.merge.inputs import contained, output_path, reserved_name, resolve_model_list


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


@pytest.mark.parametrize("line", [
    "..\\outside.safetensors", "sub\\..\\..\\x.safetensors", "C:x.safetensors", "C:\\models\\x.safetensors",
    "c:/models/x.safetensors", "\\\\server\\share\\x.safetensors", "\\x.safetensors", "//server/share/x",
    "a.safetensors:stream", "..", "sub/..\\..",
])
def test_windows_escapes_are_refused_on_every_platform(folder, line):
    with pytest.raises(LuneError, match="outside the models folder"):
        resolve_model_list(line, [str(folder)], str(folder / "base.safetensors"))


@pytest.mark.parametrize("line", ["NUL", "con.safetensors", "sub/Aux.pt", "COM1.safetensors", "lpt9", "nul .txt",
                                  "sub\\prn.safetensors", "CON."])
def test_windows_reserved_names_are_refused(folder, line):
    with pytest.raises(LuneError, match="Windows device name"):
        resolve_model_list(line, [str(folder)], str(folder / "base.safetensors"))


@pytest.mark.parametrize("name", ["nul", "CON.safetensors", "com3", "a:b", "x*", "trailing.", "name .safetensors",
                                  "a|b"])
def test_output_name_refuses_windows_names(folder, name):
    with pytest.raises(LuneError, match="not a plain file name"):
        output_path(name, str(folder))


@pytest.mark.parametrize("name", ["console.safetensors", "nullable", "com10", "auxiliary", "lpt", "conx.pt"])
def test_names_that_only_start_like_devices_are_files(name):
    assert not reserved_name(name)


@pytest.mark.parametrize("pathmod,folder,inside,outside", [
    (posixpath, "/m/checkpoints", ["/m/checkpoints/a.safetensors", "/m/checkpoints/sub/b"],
     ["/m/checkpoints_evil/a", "/m/a", "/etc/passwd"]),
    (ntpath, "C:\\m\\checkpoints", ["C:\\m\\checkpoints\\a.safetensors", "c:\\M\\Checkpoints\\sub\\b"],
     ["C:\\m\\checkpoints_evil\\a", "D:\\m\\checkpoints\\a", "\\\\server\\share\\a", "C:\\m\\a"]),
])
def test_containment_by_commonpath_for_both_path_rules(pathmod, folder, inside, outside):
    assert all(contained(p, folder, pathmod) for p in inside)
    assert not any(contained(p, folder, pathmod) for p in outside)


def test_symlinked_folder_outside_is_followed_but_names_stay_inside(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "e.safetensors").write_bytes(b"x")
    (folder / "linked").symlink_to(other, target_is_directory=True)
    got = resolve_model_list("linked/*.safetensors", [str(folder)], str(folder / "base.safetensors"))
    assert [os.path.realpath(p) for p in got] == [os.path.realpath(other / "e.safetensors")]
