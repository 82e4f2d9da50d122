"""lune.safe_read, the one safe reader behind both libraries, and the loader's format path on the tiny fixtures."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from comfyui_lune.lyra import checkpoint as lyra_checkpoint
from comfyui_lune.lune import formats, safe_read
from comfyui_lune.lune.errors import LuneError, LuneFormatError, UnsafeCheckpointError
from comfyui_lune.lyra import LyraCheckpointError, LyraError, LyraUnsafeFileError
from testbed.fixtures import sd15_files as fx


@pytest.fixture(scope="module")
def tiny():
    return fx.build_sd15_fixtures(None, "tiny")


def test_both_libraries_share_one_reader_and_one_error_root():
    assert lyra_checkpoint.safe_read is safe_read
    assert issubclass(LyraError, LuneError) and issubclass(LyraCheckpointError, LuneError)
    assert issubclass(LyraUnsafeFileError, UnsafeCheckpointError)
    assert issubclass(LyraUnsafeFileError, LyraCheckpointError)


@pytest.mark.parametrize("name", ["single_file", "diffusers_dir", "training_state", "bare_unet"])
def test_every_tiny_format_reads_the_same_unet(tiny, name):
    ckpt = formats.read_checkpoint(str(getattr(tiny, name)))
    reference = tiny.unet_ldm
    assert ckpt.unet_layout == "ldm" and ckpt.unet.keys() == reference.keys()
    assert all(torch.equal(ckpt.unet[k].to(tiny.dtype), v) for k, v in reference.items())


def test_layout_names(tiny):
    layouts = {name: formats.read_checkpoint(str(getattr(tiny, name))).layout
               for name in ("single_file", "diffusers_dir", "training_state", "bare_unet")}
    assert layouts == {"single_file": "single_file", "diffusers_dir": "diffusers", "training_state": "training_state",
                       "bare_unet": "bare_ldm"}


def test_partial_unet_is_refused_naming_the_file(tiny, tmp_path):
    sd = dict(torch.load(tiny.training_state, map_location="cpu", weights_only=True)["student"])
    del sd[fx.STUDENT_PREFIX + "input_blocks.1.0.emb_layers.1.bias"]
    path = tmp_path / "partial.pt"
    torch.save({"student": sd}, path)
    with pytest.raises(LuneFormatError, match="incomplete") as info:
        formats.read_checkpoint(str(path))
    assert str(path) in str(info.value) and "emb_layers.1.bias" in str(info.value)


# ---------------------------------------------------------------------------- a .ckpt named .safetensors

def test_ckpt_named_safetensors_needs_no_symlink(tiny, tmp_path, monkeypatch, caplog):
    """Windows refuses os.symlink without admin rights; the pickle must still load (it used to be reported as
    corrupt). Read through an open file: no symlink, no copy."""
    path = fx.write_ckpt_as_safetensors(tmp_path / "really_a_ckpt.safetensors")

    def no_symlinks(*args, **kwargs):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    ckpt = formats.read_checkpoint(str(path))
    assert ckpt.layout == "single_file" and ckpt.has_clip and ckpt.has_vae
    assert "is really a PyTorch pickle despite the '.safetensors' extension" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["really_a_ckpt.safetensors"]


# ---------------------------------------------------------------------------- malformed safetensors headers

def _rewrite_header(src, dst, edit) -> None:
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    edit(header)
    raw = json.dumps(header).encode()
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("problem, edit", [
    ("no valid data_offsets", lambda h: h["out.2.bias"].pop("data_offsets")),
    ("no valid data_offsets", lambda h: h["out.2.bias"].update(data_offsets=[8])),
    ("no valid dtype", lambda h: h["out.2.bias"].pop("dtype")),
    ("invalid shape", lambda h: h["out.2.bias"].update(shape="4")),
    ("does not match its data_offsets", lambda h: h["out.2.bias"].update(shape=[400])),
    ("is not an object", lambda h: h.update({"out.2.bias": [1, 2]})),
    ("__metadata__ is not an object", lambda h: h.update({"__metadata__": "abc"})),
])
def test_malformed_header_entry_is_a_format_error(tmp_path, problem, edit):
    good = tmp_path / "good.safetensors"
    save_file({"out.2.bias": torch.zeros(4), "out.2.weight": torch.zeros(4, 320, 3, 3)}, good)
    bad = tmp_path / "bad.safetensors"
    _rewrite_header(good, bad, edit)
    with pytest.raises(LuneFormatError) as info:
        formats.read_checkpoint(str(bad))
    message = str(info.value)
    assert str(bad) in message and problem in message and "Download it again" in message


def test_truncated_body_is_named(tiny, tmp_path):
    cut = fx.write_truncated_safetensors(tiny.bare_unet, tmp_path / "cut.safetensors",
                                         tiny.bare_unet.stat().st_size // 2)
    with pytest.raises(LuneFormatError, match=r"cut\.safetensors could not be read as safetensors: the file is "
                                              r"truncated: its header describes"):
        safe_read.read_weights_file(str(cut))


# ---------------------------------------------------------------------------- pickles and containers

def test_unsafe_pickle_names_the_callable_and_never_suggests_unsafe_loading(tmp_path):
    marker = tmp_path / "pwned"
    path = fx.write_malicious_pt(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_read.read_weights_file(str(path))
    message = str(info.value)
    assert "refused" in message and "exec" in message and "Nothing from the file was executed" in message
    assert "weights_only" not in message and not marker.exists()


def test_cuda_tagged_zip_pickle_is_mapped_to_cpu(tiny, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    raw = safe_read.read_weights_file(str(tiny.training_state))
    assert raw.format == safe_read.TORCH_ZIP
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    assert all(t.device.type == "cpu" for t in raw.content["student"].values())


def test_wrappers_and_containers():
    t = torch.zeros(1)
    assert safe_read.strip_wrapper_prefixes({"module._orig_mod.unet.a": t, "b": t}).keys() == {"a", "b"}
    assert safe_read.find_state_dict({"opt": {}, "student": {"a": t}}, "x", ("model", "student")) == ({"a": t},
                                                                                                       "student")
    assert safe_read.find_state_dict({"a": t}, "x", ("student",)) == ({"a": t}, "bare")
    assert safe_read.find_state_dict({"opt": {"state": {}}}, "x", ("student",)) is None
    with pytest.raises(LuneFormatError, match="holds a list"):
        safe_read.find_state_dict([t], "x", ("student",))
