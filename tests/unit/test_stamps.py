"""lune.stamps.file_stamp: every way a model file gets replaced changes the stamp, nothing else does."""
from __future__ import annotations

import os
import shutil
import time

from comfyui_lune.lune.stamps import MISSING, file_stamp

SETTLE_SECONDS = 0.05  # a replacement comes after the original; also past the kernel's coarse ctime tick


def _same_size_other_bytes(src, dst):
    data = bytearray(src.read_bytes())
    data[0] ^= 0xFF
    dst.write_bytes(bytes(data))


def _cp_p(src, dst, like):
    """``cp -p src dst`` where src was given dst's old mtime: same size, same mtime (shutil.copy2 + os.utime)."""
    st = os.stat(like)
    shutil.copy2(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_unchanged_file_keeps_its_stamp(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights" * 100)
    assert file_stamp(str(f)) == file_stamp(str(f))


def test_cp_p_over_the_file_in_place_changes_the_stamp(tmp_path):
    f, new = tmp_path / "model.pt", tmp_path / "new.pt"
    f.write_bytes(b"weights" * 100)
    _same_size_other_bytes(f, new)
    before = file_stamp(str(f))
    ino = os.stat(f).st_ino
    time.sleep(SETTLE_SECONDS)
    _cp_p(new, f, like=f)
    st = os.stat(f)
    assert st.st_ino == ino and st.st_size == 700  # same inode, size and mtime: only ctime tells
    assert file_stamp(str(f)) != before


def test_cp_p_copy_renamed_over_the_file_changes_the_stamp(tmp_path):
    f, new, staged = tmp_path / "model.pt", tmp_path / "new.pt", tmp_path / ".model.pt.part"
    f.write_bytes(b"weights" * 100)
    _same_size_other_bytes(f, new)
    old = os.stat(f)
    before = file_stamp(str(f))
    time.sleep(SETTLE_SECONDS)
    _cp_p(new, staged, like=f)
    os.replace(staged, f)
    st = os.stat(f)
    assert (st.st_size, st.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert file_stamp(str(f)) != before


def test_missing_then_present_and_several_paths(tmp_path):
    f, cfg = tmp_path / "model.pt", tmp_path / "config.json"
    f.write_bytes(b"w")
    without = file_stamp(str(f), str(cfg))
    assert without.endswith(f"{cfg}={MISSING}")
    cfg.write_text("{}")
    assert file_stamp(str(f), str(cfg)) != without
    assert file_stamp(str(f), str(f)) == file_stamp(str(f))  # duplicates count once
