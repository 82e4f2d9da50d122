"""Per-step sampling time and UNet calls: the pack's nodes vs stock ModelSamplingSD3 + LatentMultiply.

    python -m bench.sampling [--size 256]

Full-size SD1.5 (random weights, single-file fixture), 8 steps, CFG 7.5, batch 1, in one ComfyUI process:
  pack : Load Lune Model (lune-flux, shift 2) → KSampler(lune_euler, lune_flow) → Lune Latent Multiply (fixed 1.0)
  stock: Load Checkpoint → ModelSamplingSD3(2.0) → KSampler(euler, simple) → LatentMultiply(1.0)
Both on the same weights; 1 warm-up each, then REPEATS alternating runs. Target: time ratio ≤ 1.02, equal calls.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from .common import publish, machine_line, median

STEPS, CFG, SEED, SHIFT = 8, 7.5, 0, 2.0
REPEATS = 3
TARGET = 1.02


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    args = parser.parse_args(argv if argv is not None else [])
    from .comfy_child import boot_with_full_models

    comfy, names = boot_with_full_models()
    nodes, mapping = comfy.nodes, comfy.nodes.NODE_CLASS_MAPPINGS
    torch.set_grad_enabled(False)
    pack_model, clip, _ = mapping["LuneModelLoader"]().load(names["single_file"], "lune-flux", SHIFT,
                                                            "(from model file)")
    stock_base = nodes.CheckpointLoaderSimple().load_checkpoint(names["single_file"])[0]
    stock_model = mapping["ModelSamplingSD3"]().patch(stock_base, SHIFT)[0]
    pos = nodes.CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}
    calls = {"n": 0}
    hook = pack_model.model.diffusion_model.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    stock_hook = stock_model.model.diffusion_model.register_forward_pre_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1)) if stock_model.model is not pack_model.model else None

    def pack():
        out = nodes.common_ksampler(pack_model, SEED, STEPS, CFG, "lune_euler", "lune_flow", pos, neg, latent)[0]
        return mapping["LuneLatentMultiply"]().apply(out, "fixed", 1.0, pack_model)[0]["samples"]

    def stock():
        out = nodes.common_ksampler(stock_model, SEED, STEPS, CFG, "euler", "simple", pos, neg, latent)[0]
        return mapping["LatentMultiply"].execute(out, 1.0).result[0]["samples"]

    results = {"pack": [], "stock": []}
    counts = {}
    outputs = {}
    for name, fn in (("pack", pack), ("stock", stock)):
        calls["n"] = 0
        outputs[name] = fn()  # warm-up
        counts[name] = calls["n"]
    for _ in range(REPEATS):
        for name, fn in (("pack", pack), ("stock", stock)):
            start = time.perf_counter()
            fn()
            results[name].append((time.perf_counter() - start) / STEPS)
    hook.remove()
    if stock_hook:
        stock_hook.remove()
    p, s = median(results["pack"]), median(results["stock"])
    diff = (outputs["pack"] - outputs["stock"]).abs().max().item()
    verdict = "met" if p / s <= TARGET and counts["pack"] == counts["stock"] else "MISSED"
    text = "\n".join([
        f"# Sampling: pack nodes vs stock ModelSamplingSD3 path ({args.size}×{args.size}, {STEPS} steps, "
        f"CFG {CFG})", "",
        f"Machine: {machine_line()}. Command: `python -m bench.sampling --size {args.size}`. Full-size SD1.5, "
        f"1 warm-up + median of {REPEATS}, alternating.", "",
        "| path | s / step | UNet calls (8 steps) |", "|---|---|---|",
        f"| pack (lune_euler + lune_flow + Lune Latent Multiply) | {p:.3f} | {counts['pack']} |",
        f"| stock (ModelSamplingSD3 + euler/simple + LatentMultiply) | {s:.3f} | {counts['stock']} |", "",
        f"Time ratio pack/stock: {p / s:.3f} (target ≤ {TARGET}: {verdict}). Max |Δ latent| between the two paths: "
        f"{diff:.2e} (same grid up to the simple scheduler's rounding, docs/reference.md §1).", ""])
    return publish("sampling", text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
