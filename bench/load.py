"""Load time and peak RSS: Load Lune Model vs the stock loader reading the same weights (full-size SD1.5).

    python -m bench.load

Each run is a fresh process (ComfyUI booted first, not timed); one warm-up run per case primes the page cache,
then REPEATS measured runs, pack and stock alternating. Targets: time ratio ≤ 1.05, peak RSS ≤ 1.05.
"""
from __future__ import annotations

import sys
import time

from .common import child_report, gib, machine_line, median, peak_rss_bytes, publish, run_child, run_loader

REPEATS = 3
TIME_TARGET = RSS_TARGET = 1.05
CASES = (  # (format, stock loader or None)
    ("single_file", "CheckpointLoaderSimple"),
    ("diffusers", "UNETLoader"),
    ("bare_diffusers", "UNETLoader"),
    ("training_state", None),
)


def child(loader: str, fmt: str) -> None:
    from .comfy_child import boot_with_full_models

    comfy, names = boot_with_full_models()
    nodes = comfy.nodes
    base_rss = peak_rss_bytes()
    start = time.perf_counter()
    out = run_loader(nodes, loader, names[fmt])
    seconds = time.perf_counter() - start
    unet = out[0].model.diffusion_model
    child_report(seconds=seconds, base_rss=base_rss, params=sum(p.numel() for p in unet.parameters()))


def main() -> int:
    from .comfy_child import full_fixture

    full_fixture()  # build once (cached) outside the measured processes
    lines = ["# Model load: Load Lune Model vs stock loaders (full-size SD1.5, random weights)", "",
             f"Machine: {machine_line()}. Command: `python -m bench.load`. Fresh process per run (ComfyUI boot not "
             f"timed), 1 warm-up + median of {REPEATS}. Peak RSS is the process high-water mark (includes "
             "ComfyUI's own ≈ baseline, shown separately).", "",
             "| format | stock loader | pack time (s) | stock time (s) | time ratio | pack peak RSS | stock peak RSS "
             "| RSS ratio | targets |", "|---|---|---|---|---|---|---|---|---|"]
    for fmt, stock in CASES:
        loaders = ["pack"] + ([stock] if stock else [])
        for loader in loaders:
            run_child("bench.load", "--child", loader, fmt)  # warm-up
        runs = {name: [] for name in loaders}
        for _ in range(REPEATS):
            for loader in loaders:
                runs[loader].append(run_child("bench.load", "--child", loader, fmt))
        pt, prss = median(r["seconds"] for r in runs["pack"]), median(r["peak_rss"] for r in runs["pack"])
        if stock:
            st, srss = median(r["seconds"] for r in runs[stock]), median(r["peak_rss"] for r in runs[stock])
            tr, rr = pt / st, prss / srss
            verdict = ("met" if tr <= TIME_TARGET and rr <= RSS_TARGET else
                       f"MISSED ({'time' if tr > TIME_TARGET else ''}{' rss' if rr > RSS_TARGET else ''})")
            lines.append(f"| {fmt} | {stock} | {pt:.2f} | {st:.2f} | {tr:.2f} | {gib(prss)} | {gib(srss)} | "
                         f"{rr:.2f} | {verdict} |")
        else:
            lines.append(f"| {fmt} | — (no stock loader reads it; see pt_load) | {pt:.2f} | — | — | {gib(prss)} | — "
                         "| — | — |")
    base = median(r["base_rss"] for r in runs["pack"])
    lines += ["", f"ComfyUI + pack baseline RSS before loading: {gib(base)}.", ""]
    text = "\n".join(lines)
    return publish("load", text)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
