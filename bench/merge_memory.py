"""Peak RSS of the streaming merge at N = 4 and N = 8 full-size SD1.5 checkpoints, beside a naive merge at N = 4.

    flock /tmp/lune-heavy.lock python -m bench.merge_memory

Inputs: full-size random SD1.5 single-file checkpoints (testbed/fixtures/sd15_single_files.py, fp16, ≈ 2.1 GB
each; base = seed 0, models = seeds 1..N), built once into the fixture cache (≈ 19 GB for 9 files).
Each case runs in a fresh process; "above pre-merge" = peak RSS (VmHWM) minus the RSS measured just before the
merge starts (imports done). Target: ≤ 3 GB above pre-merge for the streaming merge at N = 4 and N = 8.
The naive baseline opens every file (memory-mapped, like a load of all state dicts), stacks each key's N
tensors in float64 and keeps the merged state dict in memory until ``save_file`` — the shape of the reference
TGMD run, whose memory grows with N.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from .common import child_report, gib, machine_line, publish, run_child

TARGET_BYTES = 3 * 10**9
COUNTS = (4, 8)
NAIVE_COUNT = 4
SIZE = os.environ.get("LUNE_BENCH_MERGE_SIZE", "full")  # "tiny" for a quick smoke run of this script
CASES = (("tgmd", {"drop_rate": 0.1, "max_iterations": 1}), ("ties", {"density": 0.5}))


def fixture_paths(count: int) -> tuple[str, list[str]]:
    from testbed.fixtures.sd15_single_files import build_sd15_single_file

    return (str(build_sd15_single_file(SIZE, 0)),
            [str(build_sd15_single_file(SIZE, seed)) for seed in range(1, count + 1)])


def current_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def naive_tgmd(base_path: str, model_paths: list[str], out_path: str, drop_rate: float, iterations: int) -> int:
    """Every file open, per key stack N task vectors in fp64, DROP + sign-count vote + Weiszfeld on the stack."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from comfyui_lune.lune.merge import keep_mask

    base = safe_open(base_path, framework="pt")
    models = [safe_open(p, framework="pt") for p in model_paths]
    out = {}
    for key in base.keys():
        theta0 = base.get_tensor(key)
        if not theta0.is_floating_point():
            out[key] = theta0
            continue
        b = theta0.double()
        tau = torch.stack([m.get_tensor(key).double() - b for m in models])
        tau *= torch.stack([keep_mask(0, i, key, b.shape, drop_rate) for i in range(len(models))])
        gamma = torch.sign(torch.sign(tau).sum(0))
        points = (tau * (torch.sign(tau) == gamma)).reshape(len(models), -1)
        median = points.mean(0)
        for _ in range(iterations):
            weights = 1.0 / (points - median).norm(dim=1).clamp(min=1e-6)
            median = (weights[:, None] * points).sum(0) / weights.sum()
        out[key] = (b + median.reshape(b.shape)).to(theta0.dtype)
    save_file(out, out_path)
    return len(out)


def child(case: str, method: str, count: int) -> None:
    import logging

    from comfyui_lune.lune.merge import MergeParams, merge_models

    logging.basicConfig(level=logging.WARNING)
    options = dict(CASES)[method]
    base, models = fixture_paths(count)
    folder = tempfile.mkdtemp(prefix="lune-bench-merge-")
    out = os.path.join(folder, "merged.safetensors")
    before = current_rss()
    start = time.perf_counter()
    try:
        if case == "naive":
            keys = naive_tgmd(base, models, out, options["drop_rate"], options["max_iterations"])
        else:
            seen = []
            merge_models(base, models, out, MergeParams(method=method, **options),
                         progress=lambda done, total, key: seen.append(total))
            keys = seen[-1]
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    child_report(pre_merge_rss=before, seconds=seconds, keys=keys)


def main() -> int:
    fixture_paths(max(COUNTS))  # build in this process first (not measured)
    rows = []
    for method, options in CASES:
        for count in COUNTS:
            rows.append(("streaming", method, options, count, run_child("bench.merge_memory", "--child", "streaming",
                                                                       method, str(count), timeout=7200)))
    naive = run_child("bench.merge_memory", "--child", "naive", "tgmd", str(NAIVE_COUNT), timeout=7200)
    rows.append(("naive stack", "tgmd", dict(CASES)["tgmd"], NAIVE_COUNT, naive))
    file_size = gib(os.path.getsize(fixture_paths(1)[0]))
    lines = [f"# Streaming merge memory ({SIZE}-size SD1.5 single files, fp16, {file_size} each)", "",
             f"Machine: {machine_line()}. Command: `flock /tmp/lune-heavy.lock python -m bench.merge_memory`. "
             "Fresh process per case; base = seed 0, models = seeds 1..N. Peak RSS above pre-merge = VmHWM − RSS "
             f"just before the merge. Target: ≤ {TARGET_BYTES / 1e9:.0f} GB above pre-merge for the streaming "
             f"merge at N = {COUNTS[0]} and N = {COUNTS[1]}.", "",
             "| merge | method (params) | N | time (s) | passes | ms per model per key per pass | peak RSS | "
             "above pre-merge | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, method, options, count, r in rows:
        above = r["peak_rss"] - r["pre_merge_rss"]
        passes = 2 + options.get("max_iterations", 0)  # tgmd: vote, mean, iterations; ties: vote, disjoint mean
        per = 1000 * r["seconds"] / (count * r["keys"] * passes)
        params = ", ".join(f"{k} {v}" for k, v in options.items())
        target = (f"≤ 3 GB {'met' if above <= TARGET_BYTES else 'MISSED'}" if label == "streaming" else "—")
        lines.append(f"| {label} | {method} ({params}) | {count} | {r['seconds']:.0f} | {passes} | {per:.1f} | "
                     f"{gib(r['peak_rss'])} | {gib(above)} | {target} |")
    stream4 = next(r for label, m, _, c, r in rows if label == "streaming" and m == "tgmd" and c == NAIVE_COUNT)
    ratio = (stream4["peak_rss"] - stream4["pre_merge_rss"]) / (naive["peak_rss"] - naive["pre_merge_rss"])
    lines += ["", f"streaming / naive peak RSS above pre-merge (tgmd, N = {NAIVE_COUNT}): {ratio:.2f}",
              "", "ms per model per key per pass = merge time / (N × keys × passes), keys = every tensor of the file "
              "(copied ones included); a pass reads every model once: tgmd makes 2 + max_iterations (sign vote, "
              "mean, Weiszfeld iterations), ties 2 (magnitude vote with the k-th-largest thresholds, which are "
              "cached, then the disjoint mean). The naive case is timed like tgmd.", ""]
    return publish("merge_memory", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
