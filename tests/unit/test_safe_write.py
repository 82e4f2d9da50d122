"""lune.safe_write: the one publish every written file goes through (merge outputs, conversions)."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_lune.lune import safe_write
from comfyui_lune.lune.errors import LuneError
from comfyui_lune.lune.merge import MergeParams, merge_models


def _tensors():
    return {"a16": torch.arange(3, dtype=torch.float16), "b8": torch.arange(5, dtype=torch.uint8),
            "c32": torch.arange(7, dtype=torch.float32), "d64": torch.arange(3, dtype=torch.float64),
            "e16": torch.ones((), dtype=torch.bfloat16), "f32": torch.arange(3, dtype=torch.int32)}


def test_tensors_are_aligned_to_their_element_size(tmp_path):
    dst = tmp_path / "x.safetensors"
    safe_write.write_safetensors(str(dst), _tensors(), {"k": "v"})
    raw = dst.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    sizes = {"F64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "U8": 1}
    for key, entry in header.items():
        if key != "__metadata__":
            assert (8 + n + entry["data_offsets"][0]) % sizes[entry["dtype"]] == 0, key
    got = load_file(dst)
    assert all(torch.equal(got[k], v) for k, v in _tensors().items())


def test_no_posix_only_calls_and_no_umask_change(tmp_path, monkeypatch, files_for_merge):
    """Windows Python has no os.fchmod; os.umask is process-wide (ComfyUI serves from several threads)."""
    monkeypatch.delattr(os, "fchmod", raising=False)

    def no_umask(*args):
        raise AssertionError("os.umask must not be called")

    monkeypatch.setattr(os, "umask", no_umask)
    safe_write.write_safetensors(str(tmp_path / "w.safetensors"), _tensors(), {})
    base, models = files_for_merge
    merge_models(base, models, str(tmp_path / "m.safetensors"), MergeParams(method="ties"))
    monkeypatch.undo()
    if os.name == "posix":  # the new file gets the permissions of any new file: 0o666 minus the umask
        current = os.umask(0o022)
        os.umask(current)
        assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o666 & ~current


@pytest.fixture()
def files_for_merge(tmp_path):
    paths = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        paths.append(str(tmp_path / f"in{i}.safetensors"))
        save_file({"w": torch.randn(4, 4, generator=g)}, paths[-1])
    return paths[0], paths[1:]


def test_fsync_before_the_name_appears(tmp_path, monkeypatch):
    events = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def link(src, dst):
        events.append(("link", os.stat(src).st_ino))
        return real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    safe_write.write_safetensors(str(tmp_path / "x.safetensors"), _tensors(), {})
    link_at = next(i for i, e in enumerate(events) if e[0] == "link")
    assert ("fsync", events[link_at][1]) in events[:link_at], events


@pytest.mark.parametrize("links", [True, False], ids=["hard link", "exclusive create"])
def test_a_file_appearing_meanwhile_is_never_replaced(tmp_path, monkeypatch, links):
    dst = tmp_path / "x.safetensors"
    if not links:
        monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(1, "not permitted")))
    with pytest.raises(LuneError, match="already exists; nothing was overwritten"):
        with safe_write.new_file(str(dst)) as f:
            f.write(b"new data")
            dst.write_bytes(b"user file")
    assert dst.read_bytes() == b"user file"
    assert sorted(os.listdir(tmp_path)) == ["x.safetensors"]


def test_error_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with safe_write.new_file(str(tmp_path / "x.bin")) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    writer = safe_write.SafetensorsStreamWriter(str(tmp_path / "y.safetensors"), {"a": (torch.float32, (2,)),
                                                                                 "b": (torch.float32, (2,))}, {})
    with pytest.raises(RuntimeError, match="only 1 of 2 tensors"):
        with writer:
            writer.write("a", torch.zeros(2))
    assert os.listdir(tmp_path) == []
