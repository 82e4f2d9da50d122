"""Merging checkpoints as they come: EMA copies and LDM buffers, diffusers-named UNets, UNet-only sets with a
CLIP/VAE donor, legacy .ckpt pickles. Weights from the tiny SD1.5 fixture (testbed/fixtures/merge_files.py), so
the same weights in two layouts must give the same file bit for bit."""
from __future__ import annotations

import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_lune.lune.errors import UnsupportedModelError
from comfyui_lune.lune.merge import MergeParams, merge_models
from testbed.fixtures import merge_files

UNET = "model.diffusion_model."
PARAMS = MergeParams(method="ties_soup")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_ckpts")
    for seed in (0, 1, 2, 5):
        save_file(merge_files.sd15_single(seed), root / f"single{seed}.safetensors")
    for seed in (0, 1):
        save_file(merge_files.sd15_with_ema(seed), root / f"ema{seed}.safetensors")
    for seed in (0, 1, 2):
        save_file(merge_files.unet_only(seed, "ldm"), root / f"unet_ldm{seed}.safetensors")
    for seed in (1, 2):
        save_file(merge_files.unet_only(seed, "diffusers"), root / f"unet_diffusers{seed}.safetensors")
    merge_files.write_legacy_ckpt(root / "ema1.ckpt", merge_files.sd15_with_ema(1))
    return root


def merged(folder, out_dir, name, base, models, **kwargs):
    out = out_dir / f"{name}.safetensors"
    merge_models(str(folder / base), [str(folder / m) for m in models], str(out), PARAMS, **kwargs)
    return load_file(out)


def same(a: dict, b: dict, keys) -> None:
    for key in keys:
        assert torch.equal(a[key], b[key]), key


def test_ema_buffers_and_position_ids_are_not_merged(folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lune")
    out = merged(folder, tmp_path, "ema", "ema0.safetensors", ["ema1.safetensors", "single2.safetensors"])
    plain = merged(folder, tmp_path, "plain", "single0.safetensors", ["single1.safetensors", "single2.safetensors"])
    base = load_file(folder / "ema0.safetensors")
    assert not [k for k in out if k.startswith("model_ema.")], "the base's stale EMA copy was written"
    assert set(out) == set(plain) | set(merge_files.LDM_BUFFERS)
    same(out, plain, plain)  # weights as if the EMA and buffers were not there; position_ids from the base
    same(out, base, merge_files.LDM_BUFFERS)
    messages = [r.getMessage() for r in caplog.records]
    assert any("EMA tensors (model_ema.*) of the base are not written" in m for m in messages)


def test_extra_ema_keys_of_a_model_are_ignored_with_one_line(folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lune")
    out = merged(folder, tmp_path, "m", "single0.safetensors", ["ema1.safetensors", "single2.safetensors"])
    plain = merged(folder, tmp_path, "plain", "single0.safetensors", ["single1.safetensors", "single2.safetensors"])
    same(out, plain, plain)
    assert set(out) == set(plain)
    lines = [r.getMessage() for r in caplog.records if "ignored extra keys" in r.getMessage()]
    assert len(lines) == 1 and "ema1.safetensors: 136 " in lines[0], lines  # 122 EMA + decay/updates + 12 buffers


def test_diffusers_unet_only_onto_a_full_checkpoint(folder, tmp_path):
    names = merge_files.diffusers_to_ldm()
    out = merged(folder, tmp_path, "d", "single0.safetensors", ["single1.safetensors", "unet_diffusers2.safetensors"],
                 unet_names=names)
    ldm = merged(folder, tmp_path, "l", "single0.safetensors", ["single1.safetensors", "unet_ldm2.safetensors"])
    full = merged(folder, tmp_path, "f", "single0.safetensors", ["single1.safetensors", "single2.safetensors"])
    base = load_file(folder / "single0.safetensors")
    assert set(out) == set(base)
    same(out, ldm, ldm)
    unet_keys = [k for k in base if k.startswith(UNET)]
    same(out, full, unet_keys)  # the UNet is merged over all three …
    same(out, base, [k for k in base if not k.startswith(UNET)])  # … CLIP/VAE are not in every model: the base's
    with pytest.raises(UnsupportedModelError, match="'conv_in.bias'.*diffusers-named UNets"):  # without the map
        merged(folder, tmp_path, "x", "single0.safetensors", ["unet_diffusers2.safetensors"])


def test_unet_only_set_with_clip_vae_from(folder, tmp_path):
    out = merged(folder, tmp_path, "u", "unet_ldm0.safetensors", ["unet_diffusers1.safetensors",
                                                                   "unet_ldm2.safetensors"],
                 unet_names=merge_files.diffusers_to_ldm(), clip_vae_from=str(folder / "single5.safetensors"))
    full = merged(folder, tmp_path, "f", "single0.safetensors", ["single1.safetensors", "single2.safetensors"])
    donor = load_file(folder / "single5.safetensors")
    assert set(out) == set(donor), "the output is a single-file checkpoint"
    same(out, full, [k for k in full if k.startswith(UNET)])
    same(out, donor, [k for k in donor if not k.startswith(UNET)])


def test_legacy_ckpt_is_read_once_into_a_temporary_copy(folder, tmp_path, monkeypatch):
    from comfyui_lune.lune.merge import sources

    loads = []
    real = sources.load_pickle
    monkeypatch.setattr(sources, "load_pickle", lambda path, kind: loads.append(path) or real(path, kind))
    out = merged(folder, tmp_path, "c", "single0.safetensors", ["ema1.ckpt", "single2.safetensors"])
    ref = merged(folder, tmp_path, "s", "single0.safetensors", ["ema1.safetensors", "single2.safetensors"])
    assert loads == [str(folder / "ema1.ckpt")], "the pickle must be read exactly once"
    same(out, ref, ref)
    assert set(out) == set(ref)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == [], "temporary copy left behind"
