"""lune.convert: the output records its variant, is published atomically and never overwrites a file — not even
one that appears while the conversion runs."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors import safe_open

from comfyui_lune.lune import convert
from comfyui_lune.lune.errors import LuneError
from testbed.fixtures import sd15_files as fx


@pytest.fixture()
def source(tmp_path):
    src = tmp_path / "sd15-flow-lune-flux_train.pt"
    shutil.copyfile(fx.build_sd15_fixtures(None, "tiny").training_state, src)
    return src


def _metadata(path) -> dict:
    with safe_open(path, "pt") as f:
        return f.metadata()


@pytest.mark.parametrize("variant, recorded", [("sol", "sol"), ("auto", "lune-flux"), (None, None)])
def test_variant_is_recorded(source, variant, recorded):
    out = convert.convert_to_safetensors(str(source), variant=variant)
    meta = _metadata(out)
    assert meta.get("lune.variant") == recorded
    assert meta["lune.source_file"] == source.name and meta["lune.source_format"] == "training_state"
    assert set(meta) <= {"lune.variant", "lune.source_file", "lune.source_format"}  # no generic lune.* keys
    reference = fx.reference_unet("tiny")
    with safe_open(out, "pt") as f:
        assert all(torch.equal(f.get_tensor(k).to(torch.float16), v) for k, v in reference.items())


def test_unknown_variant_is_refused_before_writing(source):
    with pytest.raises(ValueError, match="unknown Lune variant"):
        convert.convert_to_safetensors(str(source), variant="lune-xl")
    assert sorted(os.listdir(source.parent)) == [source.name]


def test_file_appearing_during_conversion_is_not_overwritten(source, monkeypatch):
    """The destination shows up after every existence check (another conversion, a copy finishing): the old
    ``exists`` + ``os.replace`` replaced it; publishing with a hard link refuses instead."""
    from comfyui_lune.lune import safe_write

    dst = convert.default_output_path(str(source))
    real_lexists, real_write = os.path.lexists, safe_write.SafetensorsStreamWriter.write

    def lexists(path):
        return False if os.fspath(path) == dst else real_lexists(path)

    def write_then_race(self, key, tensor):
        real_write(self, key, tensor)
        if not real_lexists(dst):
            with open(dst, "wb") as f:
                f.write(b"the user's own file")

    monkeypatch.setattr(os.path, "lexists", lexists)
    monkeypatch.setattr(safe_write.SafetensorsStreamWriter, "write", write_then_race)
    with pytest.raises(LuneError, match="already exists; nothing was overwritten"):
        convert.convert_to_safetensors(str(source))
    with open(dst, "rb") as f:
        assert f.read() == b"the user's own file"
    assert sorted(os.listdir(source.parent)) == sorted([source.name, os.path.basename(dst)]), "temp file left"


def test_without_hard_links_an_exclusive_create_is_used(source, monkeypatch):
    from comfyui_lune.lune import safe_write

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = convert.convert_to_safetensors(str(source), variant="lune")
    assert _metadata(out)["lune.variant"] == "lune"
    with pytest.raises(LuneError, match="already exists"):
        safe_write.publish(out, out)
    assert sorted(os.listdir(source.parent)) == sorted([source.name, os.path.basename(out)])
