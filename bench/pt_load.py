"""Peak RSS and time of reading a ~10 GB training-state .pt: the pack's reader vs a naive ``torch.load``.

    python -m bench.pt_load            (full-size fixture: fp32 UNet + AdamW moments, 10.3 GB like the original)

Each case runs in a fresh process. Target: the pack's read peaks at ≤ 1.3 × the UNet's fp32 bytes.
"""
from __future__ import annotations

import math
import sys
import time

from .common import publish, child_report, gib, machine_line, median, run_child

TARGET = 1.3
REPEATS = 3


def _fixture_path() -> str:
    from testbed.fixtures.sd15_files import build_sd15_fixtures

    return str(build_sd15_fixtures(None, size="full", seed=0).training_state)


def child(case: str, path: str) -> None:
    import torch

    start = time.perf_counter()
    if case == "naive":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        unet = obj["student"]
    elif case == "pack":
        from comfyui_lune.lune.formats import read_checkpoint

        unet = read_checkpoint(path).unet
    else:
        raise SystemExit(f"unknown case {case}")
    checksum = math.fsum(float(t.double().sum()) for t in unet.values())  # exact, order-independent
    seconds = time.perf_counter() - start
    unet_bytes = sum(t.numel() * 4 for t in unet.values())
    child_report(seconds=seconds, unet_fp32_bytes=unet_bytes, checksum=checksum)


def main() -> int:
    path = _fixture_path()
    import os

    rows = {}
    for case in ("pack", "naive"):
        runs = [run_child("bench.pt_load", "--child", case, path) for _ in range(REPEATS if case == "pack" else 1)]
        rows[case] = runs
    unet_bytes = rows["pack"][0]["unet_fp32_bytes"]
    assert rows["pack"][0]["checksum"] == rows["naive"][0]["checksum"], "both readers must see the same weights"
    lines = [f"# Training-state .pt read ({gib(os.path.getsize(path))} file, UNet fp32 {gib(unet_bytes)})", "",
             f"Machine: {machine_line()}. Command: `python -m bench.pt_load`. Fresh process per run; "
             f"pack: median of {REPEATS}, naive: 1 run.", "",
             "| reader | time (s) | peak RSS | peak RSS / UNet fp32 | target |", "|---|---|---|---|---|"]
    for case, label in (("pack", "pack `read_checkpoint` (weights_only, mmap)"), ("naive", "naive `torch.load`")):
        t = median(r["seconds"] for r in rows[case])
        rss = median(r["peak_rss"] for r in rows[case])
        ratio = rss / unet_bytes
        target = (f"≤ {TARGET} {'met' if ratio <= TARGET else 'MISSED'}" if case == "pack" else "—")
        lines.append(f"| {label} | {t:.1f} | {gib(rss)} | {ratio:.2f} | {target} |")
    pack_rss, naive_rss = (median(r["peak_rss"] for r in rows[c]) for c in ("pack", "naive"))
    lines += ["", f"pack / naive peak RSS: {pack_rss / naive_rss:.2f}", ""]
    text = "\n".join(lines)
    return publish("pt_load", text)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
