"""Lyra Encode cost on CPU: the Lyra step vs the t5-base encode of the same prompt (target: Lyra ≤ 0.25 × T5).

Run from the repo root with ComfyUI provisioned: ``python -m bench.lyra_encode [--runs 7] [--threads N]``.

Full-size random fixtures: the Lyra default config (17,073,665 params, published trainer ``model.pt`` layout,
loaded by the real ``LyraLoader``) and a t5-base encoder (110 M params, fp16 file, loaded by the stock
``CLIPLoader`` type ``stable_audio``), inside an in-process ComfyUI on a temporary base directory. The CLIP
conditioning fed to the Lyra step is a random [1, 77, 768] tensor (the step's cost does not depend on values).

Timed round-robin (one call of each step per round, so load from other processes hits all steps alike), each
as the median of ``--runs`` rounds after two warm-up rounds:
* **Lyra step** — ``lyra_model.ready`` (ComfyUI's ``load_models_gpu``, a no-op once loaded) +
  ``lyra.transform_conditioning`` (Lyra on chunk 0 + blend), ``mode=mean`` and ``mode=sample``;
* **T5 (Lyra input)** — ``nodes.lyra_inputs.t5_hidden_states``: what Lyra Encode runs, 77 tokens;
* **T5 (stock)** — ComfyUI's own ``encode_from_tokens`` of the same prompt (pads to 128 tokens), for reference.
"""
from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import apply_common_args, bench_parser, boot_comfy, command_line, machine_line, median, publish_lines

PROMPT = "a watercolor painting of a lighthouse on a cliff at dusk, soft light, seagulls, dramatic clouds"
TARGET = 0.25


def _time_interleaved(fns: dict, runs: int, warmup: int = 2) -> tuple[dict, list[dict]]:
    """Median seconds per function, calling them round-robin so a busy machine slows all of them alike;
    also the per-round samples (for per-round ratios)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    rounds = []
    for _ in range(runs):
        sample = {}
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sample[name] = time.perf_counter() - start
        rounds.append(sample)
    return {name: median([r[name] for r in rounds]) for name in fns}, rounds


def main(argv: list[str] | None = None) -> str:
    parser = bench_parser(__doc__, runs=7)
    args = parser.parse_args(argv)
    apply_common_args(args)

    from testbed.fixtures import lyra_files
    from testbed.fixtures.t5_files import build_t5_base
    from testbed.env import place_model

    with tempfile.TemporaryDirectory(prefix="lune-bench-lyra-") as tmp:
        tmp = Path(tmp)
        comfy = boot_comfy(tmp / "base")
        lyra_dir = tmp / "lyra"
        lyra_dir.mkdir()
        lyra_files.write_trainer_pt(lyra_dir / "model.pt", lyra_files.random_state_dict(seed=0))
        lyra_files.write_config_json(lyra_dir / "config.json")
        place_model(comfy.base_dir, "lyra", lyra_dir, "bench")
        t5_name = place_model(comfy.base_dir, "text_encoders", build_t5_base(), "t5_base_random.safetensors")

        nodes = comfy.nodes
        pack = sys.modules[nodes.NODE_CLASS_MAPPINGS["LyraEncode"].__module__]
        patcher = nodes.NODE_CLASS_MAPPINGS["LyraLoader"]().load("bench/model.pt", device="cpu")[0]
        vae = pack.lyra_model.ready(patcher)  # what Lyra Encode does before the Lyra step
        t5 = nodes.CLIPLoader().load_clip(t5_name, type="stable_audio")[0]
        params = sum(p.numel() for p in vae.parameters())

        gen = torch.Generator().manual_seed(0)
        clip_cond = torch.randn(1, 77, 768, generator=gen)
        t5_hidden = pack.lyra_inputs.t5_hidden_states(t5, PROMPT)
        stock_tokens = t5.tokenize(PROMPT)
        stock_len = len(stock_tokens["t5base"][0])

        fns = {
            "mean": lambda: pack.transform_conditioning(pack.lyra_model.ready(patcher), clip_cond, t5_hidden,
                                                        mode="mean"),
            "sample": lambda: pack.transform_conditioning(pack.lyra_model.ready(patcher), clip_cond, t5_hidden,
                                                          mode="sample", seed=1),
            "t5": lambda: pack.lyra_inputs.t5_hidden_states(t5, PROMPT),
            "t5_stock": lambda: t5.encode_from_tokens(stock_tokens),
        }
        with torch.inference_mode():
            med, rounds = _time_interleaved(fns, args.runs)
    t_lyra_mean, t_lyra_sample, t_t5, t_t5_stock = med["mean"], med["sample"], med["t5"], med["t5_stock"]
    round_ratios = sorted(r["mean"] / r["t5"] for r in rounds)

    ratio = t_lyra_mean / t_t5
    verdict = "meets" if ratio <= TARGET else "MISSES"
    rows = [
        ("Lyra step, mode=mean", t_lyra_mean, f"{t_lyra_mean / t_t5:.3f}"),
        ("Lyra step, mode=sample", t_lyra_sample, f"{t_lyra_sample / t_t5:.3f}"),
        ("t5-base encode, 77 tokens (Lyra input)", t_t5, "1.000"),
        (f"t5-base encode, stock ComfyUI ({stock_len} tokens)", t_t5_stock, f"{t_t5_stock / t_t5:.3f}"),
    ]
    lines = [
        "# Lyra Encode: Lyra step vs t5-base encode (CPU)",
        "",
        f"Machine: {machine_line()}, {platform.processor() or 'cpu'}, torch threads {torch.get_num_threads()}.",
        f"Lyra: {params:,} params, fp32, CPU. t5-base: 110 M params, fp16 weights computed in fp32 (ComfyUI).",
        f"Prompt: {PROMPT!r}. Median of {args.runs} rounds after 2 warm-up rounds; each round calls every "
        "step once, round-robin.",
        "",
        "| step | median ms | × T5 (Lyra input) |",
        "|---|---:|---:|",
        *[f"| {name} | {sec * 1000:.1f} | {rel} |" for name, sec, rel in rows],
        "",
        f"Ratio Lyra (mean) / T5 = **{ratio:.3f}** (ratio of medians; per-round ratios "
        f"{round_ratios[0]:.3f}–{round_ratios[-1]:.3f}): {verdict} the target ≤ {TARGET}.",
        "",
        "Command: " + command_line("bench.lyra_encode", parser, args),
    ]
    return publish_lines("lyra_encode", lines)


if __name__ == "__main__":
    main()
