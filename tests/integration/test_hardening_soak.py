"""Soak: 50 sequential prompts in one ComfyUI server mixing the four formats, the three variants, Lyra, the
sampler adapter, LuneShift and a pickle named .safetensors (read through an open file, no temp alias). All succeed;
the server's RSS at the end is at most 10 % above the highest RSS of the two-cycle (20-prompt) warm-up; no temp
files are left behind; every model file is untouched.

The baseline is the warm-up's peak, not one sample at its end: the allocator returns freed pages to the system at
unpredictable moments (measured on 0.28.2: 2065 MiB at prompt 8, 1705 MiB at prompt 9, a plateau of 2190 MiB from
prompt 17 on), so a single sample can sit hundreds of MiB below the level the server settles at. A leak grows
past the peak cycle after cycle; a plateau does not.

The server is a dedicated one over its own base directory (same fixture files), so that its RSS, its temp
dirs (``TMPDIR`` pointed at a private folder) and its models/ tree are attributable to the soak alone.
``OMP_NUM_THREADS=1`` keeps it fast on a shared 2-core machine (two OpenMP threads competing with other
processes make each op wait for a time slice: up to 30× slower).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from testbed.fixtures import bad_inputs
from testbed.fixtures import sd15_files
from testbed.fixtures.t5_files import build_t5_base
from testbed import graphs
from testbed.hardening import (
    describe_failure,
    fingerprint_tree,
    lyra_graph,
    new_base,
    rss_kb,
    start_server,
    succeeded,
)

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

PROMPTS = 50
WARMUP = 20  # two cycles: every code path has run twice, the allocator has reached its working level
MAX_RSS_GROWTH = 0.10
SINGLE, DIFFUSERS = "lune_tiny_single.safetensors", "lune_tiny_diffusers/unet/diffusion_pytorch_model.safetensors"
TRAIN, BARE, RENAMED = "lune_tiny_train.pt", "lune_tiny_bare.safetensors", "sd15-flow-lune_really_a_ckpt.safetensors"
T5, LYRA = "t5_base_random.safetensors", "soak_lyra/model.pt"


def _txt(model, seed, *, variant="auto", sampler="euler", scheduler="simple", donor=False, latent_mode="fixed",
         shift_node=None, adapter=False):
    g = graphs.txt2img(model, variant=variant, sampler=sampler, scheduler=scheduler, steps=3, seed=seed, size=64,
                       clip_vae_from=SINGLE if donor else "(from model file)", latent_mode=latent_mode,
                       prefix=f"soak{seed:02d}")
    if adapter:
        g = graphs.with_adapter(g, steps=3, seed=seed)
    if shift_node is not None:
        g["11"] = {"class_type": "LuneShift", "inputs": {"model": ["1", 0], "shift": shift_node}}
        g["5"]["inputs"]["model"] = ["11", 0]
        if adapter:
            g["10"]["inputs"]["model"] = ["11", 0]
    return g


def _lyra(seed, mode="mean", strength=1.0):
    g = lyra_graph(SINGLE, T5, LYRA, seed=seed, steps=3, prefix=f"soak{seed:02d}")
    for node in ("4", "5"):
        g[node]["inputs"].update(mode=mode, seed=seed, strength=strength)
    return g


CYCLE = [  # every code path of the soak; the warm-up runs it twice before RSS is judged
    lambda s: _txt(SINGLE, s, variant="lune", latent_mode="variant default"),
    lambda s: _txt(DIFFUSERS, s, variant="lune-flux", sampler="lune_euler", scheduler="lune_flow", donor=True),
    lambda s: _txt(TRAIN, s, variant="sol", sampler="lune_euler", scheduler="lune_flow", donor=True,
                   latent_mode="variant default"),
    lambda s: _txt(BARE, s, variant="lune-flux", donor=True, adapter=True),
    lambda s: _lyra(s),
    lambda s: _txt(RENAMED, s, scheduler="normal", latent_mode="auto"),
    lambda s: _txt(SINGLE, s, variant="lune", shift_node=3.0, adapter=True),
    lambda s: _txt(TRAIN, s, variant="lune-flux", scheduler="sgm_uniform", donor=True),
    lambda s: _txt(SINGLE, s, variant="sol", scheduler="normal"),
    lambda s: _lyra(s, mode="sample", strength=0.5),
]


def _lune_temp_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("lune-*") if not p.name.startswith("lune-comfy-base-")}


def _pack_temp_dirs_in_tmp() -> set[str]:
    """Entries of /tmp that look like the pack's own temp dirs (a lune-* folder holding checkpoint.pt)."""
    return {p.name for p in Path("/tmp").glob("lune-*") if (p / "checkpoint.pt").exists() or
            (p / "checkpoint.pt").is_symlink()}


@pytest.fixture(scope="module")
def soak_base(tiny_sd15, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("soak")
    renamed = sd15_files.write_ckpt_as_safetensors(root / "files" / RENAMED)
    base = new_base(root / "base", models={
        "checkpoints": {SINGLE: tiny_sd15.single_file, RENAMED: renamed},
        "diffusion_models": {"lune_tiny_diffusers": tiny_sd15.diffusers_dir, TRAIN: tiny_sd15.training_state,
                             BARE: tiny_sd15.bare_unet},
        "text_encoders": {T5: build_t5_base()},
        "lyra": {"soak_lyra": bad_inputs.build_lyra_folder()},
    })
    (root / "tmp").mkdir()
    return base


def test_soak_50_prompts(soak_base: Path):
    tmpdir = soak_base.parent / "tmp"
    models_before = fingerprint_tree(soak_base / "models")
    tmp_before = _pack_temp_dirs_in_tmp()
    server = start_server(soak_base, TMPDIR=str(tmpdir), OMP_NUM_THREADS="1")
    try:
        pid = server.proc.pid
        rss = [rss_kb(pid)]
        started = time.perf_counter()
        for i in range(PROMPTS):
            prompt = CYCLE[i % len(CYCLE)](i)
            entry = server.run(prompt)
            assert succeeded(entry), f"prompt {i} ({i % len(CYCLE)} of the cycle) failed: {describe_failure(entry)}"
            images = [it for out in entry["outputs"].values() for it in out.get("images", [])]
            assert images and (soak_base / "output" / images[0]["filename"]).is_file(), f"prompt {i}: no image"
            rss.append(rss_kb(pid))
        elapsed = time.perf_counter() - started
        warm, final, peak = max(rss[:WARMUP + 1]), rss[-1], max(rss[WARMUP:])
        growth = (final - warm) / warm
        print(f"\n[soak] {PROMPTS} prompts in {elapsed:.1f} s ({elapsed / PROMPTS:.2f} s/prompt); RSS MiB: "
              f"boot {rss[0] / 1024:.0f}, warm-up ({WARMUP}) peak {warm / 1024:.0f}, peak {peak / 1024:.0f}, "
              f"final {final / 1024:.0f}; final vs warm-up peak {100 * growth:+.1f} %")
        print("[soak] RSS per prompt (MiB): " + " ".join(f"{r / 1024:.0f}" for r in rss))
        assert growth <= MAX_RSS_GROWTH, f"RSS ended {100 * growth:.1f} % above the warm-up's peak"

        log = server.log_text()
        assert "is really a PyTorch pickle" in log, "the renamed pickle was not sniffed as a pickle"
        assert "Exception during processing" not in log
        leftovers = _lune_temp_dirs(tmpdir)
        assert not leftovers, f"the pack left temp dirs behind: {leftovers}"
        comfy_temp = [p for p in (soak_base / "temp").rglob("*") if p.is_file()]
        assert not comfy_temp, f"files left in ComfyUI's temp dir: {comfy_temp}"
    finally:
        server.stop()
    assert _pack_temp_dirs_in_tmp() <= tmp_before, "the pack left temp dirs in /tmp"
    assert not list((soak_base / "models").rglob(".lune-convert-*"))
    assert fingerprint_tree(soak_base / "models") == models_before, "a model file was modified"
    other = sorted(os.listdir(tmpdir))
    print(f"[soak] other entries in the server's TMPDIR: {other or 'none'}")
