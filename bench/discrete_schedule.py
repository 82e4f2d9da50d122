"""Sampling time with Lune Discrete Schedule vs ComfyUI's stock ModelSamplingDiscrete node, same model, same run.

    python -m bench.discrete_schedule [--fixture full|tiny] [--size 256]

SD1.5 single-file fixture (random weights; ``full`` = stock size, run it under the heavy lock; ``tiny`` = the test
fixture, seconds), 8 steps, CFG 7.5, batch 1, euler + simple, in one ComfyUI process:
  pack : Load Checkpoint → Lune Discrete Schedule (v_prediction, scaled_linear 0.00085 → 0.012, ZTSNR on) → KSampler
  stock: Load Checkpoint → ModelSamplingDiscrete (v_prediction, zsnr on)                          → KSampler
At these betas both σ tables agree (our finite top equals ComfyUI's terminal constant to 2e-7), so the latents must
agree too. 1 warm-up each, then alternating runs, median. Target: time ratio pack/stock ≤ 1.02, equal UNet calls.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import machine_line, median, publish

STEPS, CFG, SEED = 8, 7.5, 0
REPEATS = {"full": 3, "tiny": 15}
TARGET = 1.02


def boot(fixture: str):
    """(InProcessComfy, checkpoint name) with the SD1.5 single-file fixture of that size in models/checkpoints."""
    from testbed.env import make_base_dir, place_model
    from testbed.fixtures.sd15_files import build_sd15_fixtures
    from testbed.inprocess import InProcessComfy, configure_args

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-bench-discrete-")))
    configure_args(base)
    fx = build_sd15_fixtures(None, size=fixture, seed=0)
    name = place_model(base, "checkpoints", fx.single_file, f"sd15_{fixture}_single.safetensors")
    return InProcessComfy(base), name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", choices=("full", "tiny"), default="full")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    args = parser.parse_args(argv if argv is not None else [])
    comfy, ckpt_name = boot(args.fixture)
    nodes, mapping = comfy.nodes, comfy.nodes.NODE_CLASS_MAPPINGS
    torch.set_grad_enabled(False)
    base, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)
    models = {
        "pack": mapping["LuneDiscreteSchedule"]().patch(base, "v_prediction", "scaled_linear", 0.00085, 0.012, True)[0],
        "stock": mapping["ModelSamplingDiscrete"]().patch(base, "v_prediction", True)[0],
    }
    pos = nodes.CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}
    calls = {"n": 0}
    hook = base.model.diffusion_model.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))

    def run(name):
        return nodes.common_ksampler(models[name], SEED, STEPS, CFG, "euler", "simple", pos, neg, latent)[0]["samples"]

    times, counts, outputs = {"pack": [], "stock": []}, {}, {}
    for name in models:
        calls["n"] = 0
        outputs[name] = run(name)  # warm-up
        counts[name] = calls["n"]
    for _ in range(REPEATS[args.fixture]):
        for name in models:
            start = time.perf_counter()
            run(name)
            times[name].append((time.perf_counter() - start) / STEPS)
    hook.remove()
    p, s = median(times["pack"]), median(times["stock"])
    diff = (outputs["pack"] - outputs["stock"]).abs().max().item()
    scale = outputs["stock"].abs().max().item()
    verdict = "met" if p / s <= TARGET and counts["pack"] == counts["stock"] else "MISSED"
    text = "\n".join([
        f"# Discrete schedule: Lune Discrete Schedule vs stock ModelSamplingDiscrete ({args.fixture} SD1.5, "
        f"{args.size}×{args.size}, {STEPS} steps, CFG {CFG})", "",
        f"Machine: {machine_line()}. Command: `python -m bench.discrete_schedule --fixture {args.fixture} "
        f"--size {args.size}`. 1 warm-up + median of {REPEATS[args.fixture]}, alternating.", "",
        "| path | s / step | UNet calls (8 steps) |", "|---|---|---|",
        f"| pack (Lune Discrete Schedule v_prediction 0.00085→0.012 ZTSNR + euler/simple) | {p:.4f} "
        f"| {counts['pack']} |",
        f"| stock (ModelSamplingDiscrete v_prediction zsnr + euler/simple) | {s:.4f} | {counts['stock']} |", "",
        f"Time ratio pack/stock: {p / s:.3f} (target ≤ {TARGET}: {verdict}). Max |Δ latent| between the two paths: "
        f"{diff:.2e} of max |latent| {scale:.2f} (same σ table up to float32 rounding).", ""])
    return publish(f"discrete_schedule_{args.fixture}", text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
