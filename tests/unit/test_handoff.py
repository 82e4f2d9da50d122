"""The pure-torch parts of the latent hand-off (lune/handoff.py): size snapping, resize, chunking, family names."""
from __future__ import annotations

import pytest
import torch

from comfyui_lune.lune import handoff


def test_sizes_snap_to_the_nearest_multiple_of_eight():
    assert handoff.handoff_size(64, 80, 1.0) == (64, 80)
    assert handoff.handoff_size(64, 80, 1.3) == (80, 104)  # 83.2 → 80, 104 stays
    assert handoff.handoff_size(512, 512, 1.5) == (768, 768)  # SD1.5 → SDXL
    assert handoff.handoff_size(1024, 768, 0.5) == (512, 384)
    assert handoff.handoff_size(64, 64, 0.125) == (8, 8)
    assert handoff.handoff_size(24, 24, 0.1) == (8, 8)  # never below one multiple
    assert handoff.snap_size(100) == 96  # 12.5 → 12 (round half to even)
    assert handoff.snap_size(52) == 48 and handoff.snap_size(53) == 56
    with pytest.raises(ValueError):
        handoff.handoff_size(64, 64, 0.0)


def test_snap_multiple_follows_a_coarser_target_vae():
    assert handoff.snap_multiple(8) == 8
    assert handoff.snap_multiple(16) == 16
    assert handoff.snap_multiple(12) == 24
    assert handoff.snap_multiple(None) == 8 and handoff.snap_multiple((4, 8, 8)) == 8
    assert handoff.handoff_size(64, 64, 1.0, handoff.snap_multiple(16)) == (64, 64)
    assert handoff.handoff_size(72, 88, 1.0, handoff.snap_multiple(16)) == (64, 96)  # 4.5 → 4, 5.5 → 6


def test_resize_is_interpolate_and_skips_an_unchanged_size():
    images = torch.rand(3, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    assert handoff.resize_images(images, 40, 56) is images
    for method in handoff.RESIZE_METHODS:
        out = handoff.resize_images(images, 64, 48, method)
        reference = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(64, 48), mode=method)
        assert out.shape == (3, 64, 48, 3)
        assert torch.equal(out, reference.permute(0, 2, 3, 1)), method
        assert torch.equal(handoff.resize_images(images[1:2], 64, 48, method), out[1:2])  # per sample
    with pytest.raises(ValueError):
        handoff.resize_images(images, 64, 48, "lanczos")
    with pytest.raises(ValueError):
        handoff.resize_images(images[0], 64, 48)


def test_batch_chunks_cover_the_batch_in_order():
    assert handoff.batch_chunks(1, 4) == [slice(0, 1)]
    assert handoff.batch_chunks(9, 4) == [slice(0, 4), slice(4, 8), slice(8, 9)]
    assert handoff.batch_chunks(0, 4) == []
    with pytest.raises(ValueError):
        handoff.batch_chunks(4, 0)


def test_families_are_named_by_latent_width():
    assert handoff.latent_family(4) == "4-channel SD1.5/SDXL"
    assert handoff.latent_family(16) == "16-channel SD3/Flux.1"
    assert handoff.latent_family(128) == "128-channel Flux.2"
    assert handoff.latent_family(7) == "7-channel"
