"""lune.mapped_pages gives back memory-mapped pages without changing any value; lune.chunked_fill equals
``load_state_dict`` bit for bit."""
from __future__ import annotations

import sys

import pytest
import safetensors
import safetensors.torch
import torch

from lune import chunked_fill, mapped_pages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise/pagemap are Linux-only")
TENSOR_BYTES = 8 * 2**20


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.fixture()
def mapped(tmp_path):
    """Two 8 MiB tensors read through safe_open (views of one private mapping of the file) + their originals."""
    original = {name: torch.randn(TENSOR_BYTES // 4, generator=torch.Generator().manual_seed(i))
                for i, name in enumerate(("a", "b"))}
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(original, str(path))
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, original


@linux_only
def test_release_gives_back_pages_and_keeps_values(mapped):
    sd, original = mapped
    assert mapped_pages.supported()
    for t in sd.values():
        t.sum()  # touch: the pages become resident
    before = _rss_file_kib()
    released = mapped_pages.release_file_pages(sd.values())
    after = _rss_file_kib()
    print(f"released {released / 2**20:.1f} MiB, RssFile {before} → {after} KiB")
    assert released >= 2 * TENSOR_BYTES - 4 * mapped_pages.PAGE_SIZE
    assert before - after >= 0.9 * released / 1024
    for k in sd:  # re-read from the file: unchanged
        assert torch.equal(sd[k], original[k])


@linux_only
def test_written_pages_and_anonymous_memory_are_never_released(mapped):
    sd, _ = mapped
    sd["a"][len(sd["a"]) // 2] = 123.0  # copy-on-write: that page now exists only in this process
    assert mapped_pages.release_file_pages([sd["a"]]) == 0
    assert sd["a"][len(sd["a"]) // 2].item() == 123.0
    anonymous = torch.randn(TENSOR_BYTES // 4)
    kept = anonymous.clone()
    assert mapped_pages.release_file_pages([anonymous]) == 0
    assert torch.equal(anonymous, kept)


@linux_only
def test_neighbouring_tensors_keep_their_pages(tmp_path):
    """Only whole pages strictly inside a tensor are released: a small neighbour on a shared page is untouched."""
    sd_in = {"small": torch.arange(10, dtype=torch.float32), "big": torch.randn(TENSOR_BYTES // 4)}
    path = tmp_path / "n.safetensors"
    safetensors.torch.save_file(sd_in, str(path))
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    assert mapped_pages.release_file_pages([sd["small"]]) == 0  # 40 bytes: no whole page inside
    mapped_pages.release_file_pages([sd["big"]])
    assert torch.equal(sd["small"], sd_in["small"]) and torch.equal(sd["big"], sd_in["big"])


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(5)])
        self.norm = torch.nn.GroupNorm(2, 8)


def _scale_conv_on_load(state_dict, prefix, *args):
    """A load_state_dict pre-hook on the root (the kind only a root-level load runs)."""
    key = prefix + "conv.weight"
    if key in state_dict:
        state_dict[key] = state_dict[key] * 2


@pytest.mark.parametrize("chunk_bytes", [1, 1000, 10**9])
@pytest.mark.parametrize("root_hook", [False, True])
def test_chunked_fill_equals_load_state_dict(chunk_bytes, root_hook):
    source = {k: torch.randn(v.shape, dtype=torch.float16) for k, v in _Net().state_dict().items()}
    source.pop("blocks.3.bias")
    source["stray.weight"] = torch.zeros(2)
    reference, filled = _Net(), _Net()
    if root_hook:
        for net in (reference, filled):
            net._register_load_state_dict_pre_hook(_scale_conv_on_load)
    expected = reference.load_state_dict(dict(source), strict=False)
    work = dict(source)
    missing, unexpected = chunked_fill.fill_module(filled, work, chunk_bytes=chunk_bytes)
    assert not work, "the source dict is emptied as it is copied"
    assert sorted(missing) == sorted(expected.missing_keys) == ["blocks.3.bias"]
    assert sorted(unexpected) == sorted(expected.unexpected_keys) == ["stray.weight"]
    for k, v in reference.state_dict().items():
        if k != "blocks.3.bias":  # left uninitialised by both
            assert v.dtype == filled.state_dict()[k].dtype == torch.float32
            assert torch.equal(v, filled.state_dict()[k]), k


def test_chunked_fill_refuses_wrong_shapes_like_load_state_dict():
    source = {"conv.weight": torch.zeros(8, 3, 5, 5)}
    with pytest.raises(RuntimeError, match="size mismatch"):
        _Net().load_state_dict(dict(source), strict=False)
    with pytest.raises(RuntimeError, match="size mismatch"):
        chunked_fill.fill_module(_Net(), dict(source))
