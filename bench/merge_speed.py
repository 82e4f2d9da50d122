"""Merge wall time and peak memory: the pack's streaming merge beside sd-mecha on the same inputs and recipe.

    flock /tmp/lune-heavy.lock python -m bench.merge_speed [--quick] [--delete-fixtures]

sd-mecha (https://github.com/ljleb/sd-mecha, 1.1.8) is installed for this benchmark only, never a dependency of the
pack: ``python -m pip install sd-mecha==1.1.8`` into the benchmark's Python (it pulls scipy, fuzzywuzzy,
python-Levenshtein); the script refuses to run without it.

Inputs: full-size random SD1.5 single-file checkpoints (``testbed/fixtures/sd15_single_files.py``, fp16, ≈ 2.1 GB
each; base = seed 0, models = seeds 1..N), built once into the fixture cache before any measurement (check
``df -h`` first: 9 files ≈ 19 GB; ``--delete-fixtures`` removes them afterwards). Every merge runs in a fresh
process; "above pre-merge" = peak RSS (VmHWM) minus the RSS just before the merge call (imports done). Outputs
are written to a temporary folder beside nothing else and deleted after the comparison.

Same recipe on both sides, float64 arithmetic, fp16 output, strength 1:

* ``ties`` (density 1, magnitude vote) ↔ sd-mecha ``add_difference(base, ties_sum(*deltas, k=1, vote_sgn=True))``;
* ``geometric_median`` ↔ sd-mecha ``geometric_median(*models, maxiter=T)`` (sd-mecha takes the median of the
  weights θᵢ, the pack of the task vectors τᵢ = θᵢ − θ₀; Weiszfeld iterates are translation-equivariant, so both
  are θ₀ + GeoMedian(τᵢ) up to rounding);
* ``tgmd`` (drop_rate 0.1) ↔ sd-mecha ``ties_sum_with_dropout(*deltas, probability=0.1, rescale=False, k=1,
  vote_sgn=False, apply_median=True, maxiter=T, seed=0)`` (DROP, sign-count vote, geometric median of the
  filtered deltas — the same composition; the dropout masks come from different generators, so the outputs
  differ where the masks differ and the figure is not an error).

Both geometric medians run exactly T = ``ITERATIONS`` Weiszfeld iterations (the pack with ``stop="reference"``,
whose ftol 1e-20 never triggers; sd-mecha's default ftol is the same rule). The pack's default is
``stop="precision"``, timed separately in the default-template row (2 models, tgmd, default settings).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from .common import child_report, gib, machine_line, publish, run_child, status_bytes

TARGET_BYTES = 3 * 10**9
COUNTS = (4, 8)
BIG_COUNT = 16  # pack only: peak RSS (the distinct files listed again: memory does not depend on the values)
ITERATIONS = 10
DROP_RATE = 0.1
SIZE = os.environ.get("LUNE_BENCH_MERGE_SIZE", "full")
METHODS = ("ties", "geometric_median", "tgmd")
OUT_DIR = os.environ.get("LUNE_BENCH_MERGE_OUT", tempfile.gettempdir())


def fixture_paths(count: int) -> tuple[str, list[str]]:
    """Base (seed 0) and N models: seeds 1..N, listed again from seed 1 beyond the distinct files built
    (``LUNE_BENCH_MERGE_DISTINCT``, default 8)."""
    from testbed.fixtures.sd15_single_files import build_sd15_single_file

    distinct = min(count, int(os.environ.get("LUNE_BENCH_MERGE_DISTINCT", "8")))
    models = [str(build_sd15_single_file(SIZE, seed)) for seed in range(1, distinct + 1)]
    return str(build_sd15_single_file(SIZE, 0)), (models * ((count + distinct - 1) // distinct))[:count]


def delete_fixtures(count: int) -> None:
    """Remove the single-file fixtures ``fixture_paths(count)`` builds (each its own cache folder)."""
    from testbed.fixtures.sd15_single_files import single_file_cache_folder

    for seed in range(min(count, int(os.environ.get("LUNE_BENCH_MERGE_DISTINCT", "8"))) + 1):
        folder = single_file_cache_folder(SIZE, seed)
        if folder.exists():
            print(f"deleting the benchmark fixture {folder}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


def pack_params(method: str, default: bool = False):
    from comfyui_lune.lune.merge import MergeParams

    if default:
        return MergeParams(method="tgmd")  # the template's settings: drop 0.1, 100 iterations, stop precision
    options = {"ties": {"density": 1.0}, "geometric_median": {"max_iterations": ITERATIONS, "stop": "reference"},
               "tgmd": {"drop_rate": DROP_RATE, "max_iterations": ITERATIONS, "stop": "reference"}}[method]
    return MergeParams(method=method, seed=0, **options)


def mecha_recipe(method: str, base: str, models: list[str]):
    import sd_mecha
    from sd_mecha.extensions.builtin.merge_methods.linear import add_difference  # θ₀ + α·δ, no wrapper logic

    theta0 = sd_mecha.model(base)
    thetas = [sd_mecha.model(p) for p in models]
    if method == "geometric_median":
        return sd_mecha.geometric_median(*thetas, maxiter=ITERATIONS)
    deltas = [sd_mecha.subtract(t, theta0) for t in thetas]
    if method == "ties":
        merged = sd_mecha.ties_sum(*deltas, k=1.0, vote_sgn=True)
    else:
        merged = sd_mecha.ties_sum_with_dropout(*deltas, probability=DROP_RATE, rescale=False, k=1.0,
                                                vote_sgn=False, apply_median=True, maxiter=ITERATIONS, seed=0)
    return add_difference(theta0, merged, alpha=1.0)


def child(impl: str, method: str, count: int, out: str) -> None:
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    base, models = fixture_paths(count)
    if impl == "mecha":
        import sd_mecha

        recipe = mecha_recipe(method, base, models)
        before = status_bytes("VmRSS")
        start = time.perf_counter()
        sd_mecha.merge(recipe, output=out, merge_dtype=torch.float64, output_dtype=torch.float16,
                       merge_device="cpu", output_device="cpu", threads=2)
    else:
        from comfyui_lune.lune.merge import merge_models

        params = pack_params(method, default=impl == "default")
        before = status_bytes("VmRSS")
        start = time.perf_counter()
        merge_models(base, models, out, params)
    child_report(pre_merge_rss=before, seconds=time.perf_counter() - start)


def max_difference(a: str, b: str, base: str) -> tuple[float, float]:
    """(max |a − b| over the UNet/CLIP/VAE tensors both hold, max |merged delta| of a) in float32."""
    from safetensors import safe_open

    worst = scale = 0.0
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb, safe_open(base, "pt") as f0:
        for key in fa.keys():
            if key not in fb.keys() or not fa.get_slice(key).get_dtype().startswith(("F", "BF")):
                continue
            x, y = fa.get_tensor(key).float(), fb.get_tensor(key).float()
            worst = max(worst, float((x - y).abs().max()))
            scale = max(scale, float((x - f0.get_tensor(key).float()).abs().max()))
    return worst, scale


def run(impl: str, method: str, count: int, folder: str) -> tuple[dict, str]:
    out = os.path.join(folder, f"{impl}-{method}-{count}.safetensors")
    result = run_child("bench.merge_speed", "--child", impl, method, str(count), out, timeout=7200)
    print(f"{impl} {method} N={count}: {result['seconds']:.0f} s, peak above pre-merge "
          f"{gib(result['peak_rss'] - result['pre_merge_rss'])}", flush=True)
    return result, out


def plan(counts: tuple[int, ...]) -> list[tuple]:
    """Cases in order of importance (the table is republished after each, so a cut-short run still reports)."""
    steps: list[tuple] = []
    for count in counts:
        for method in ("ties", "tgmd"):
            steps.append(("pair", method, count))
        if count == counts[0]:
            steps.append(("default", "tgmd", 2))
        steps.append(("pair", "geometric_median", count))
    steps.append(("pack", "tgmd", BIG_COUNT))
    return steps


def main(argv: list[str]) -> int:
    try:
        import sd_mecha  # noqa: F401
    except ImportError:
        raise SystemExit("bench.merge_speed compares with sd-mecha: python -m pip install sd-mecha==1.1.8") from None
    counts = COUNTS[:1] if "--quick" in argv else COUNTS
    if "--quick" in argv:
        os.environ["LUNE_BENCH_MERGE_DISTINCT"] = str(max(counts))  # inherited by the children
    base, _ = fixture_paths(max(counts))  # built here, not measured
    folder = tempfile.mkdtemp(prefix="lune-bench-merge-speed-", dir=OUT_DIR)
    done: dict = {"pairs": [], "diffs": [], "big": None, "default": None}
    started = time.perf_counter()
    try:
        for kind, method, count in plan(counts):
            if kind == "pair":
                ours, ours_out = run("pack", method, count, folder)
                try:
                    theirs, theirs_out = run("mecha", method, count, folder)
                except RuntimeError as e:  # e.g. killed by the kernel for lack of memory: recorded, not fatal
                    print(e, file=sys.stderr, flush=True)
                    theirs = None
                if theirs is not None:
                    done["diffs"].append((method, count, *max_difference(ours_out, theirs_out, base)))
                    os.unlink(theirs_out)
                os.unlink(ours_out)
                done["pairs"].append((method, count, ours, theirs))
            else:
                result, out = run(kind, method, count, folder)
                os.unlink(out)
                done["big" if kind == "pack" else "default"] = result
            report(done, base, time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if "--delete-fixtures" in argv:
            delete_fixtures(max(counts))
    return 0


def report(done: dict, base: str, total: float) -> None:
    file_size = gib(os.path.getsize(base))
    above = lambda r: r["peak_rss"] - r["pre_merge_rss"]  # noqa: E731
    lines = [f"# Merge speed and memory: the pack beside sd-mecha 1.1.8 ({SIZE}-size SD1.5 single files, fp16, "
             f"{file_size} each)", "",
             f"Machine: {machine_line()}. Command: `flock /tmp/lune-heavy.lock python -m bench.merge_speed` "
             f"(cases run so far: {total / 60:.0f} min). Fresh process per merge; base = seed 0, models = seeds "
             f"1..N; float64 arithmetic, fp16 output; geometric medians run exactly {ITERATIONS} Weiszfeld "
             f"iterations on both sides (pack: stop reference); tgmd drop rate {DROP_RATE}. sd-mecha runs with "
             "threads=2. Targets: pack wall time ≤ 0.5× sd-mecha; pack peak RSS ≤ 3 GB above pre-merge.", "",
             "| method | N | pack (s) | sd-mecha (s) | pack / sd-mecha | pack peak above pre-merge | "
             "sd-mecha peak above pre-merge | targets (time, memory) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, count, ours, theirs in done["pairs"]:
        if theirs is None:
            lines.append(f"| {method} | {count} | {ours['seconds']:.0f} | failed (see the log: killed by the kernel "
                         f"means out of memory) | — | {gib(above(ours))} | — | —, "
                         f"{'met' if above(ours) <= TARGET_BYTES else 'MISSED'} |")
            continue
        ratio = ours["seconds"] / theirs["seconds"]
        lines.append(f"| {method} | {count} | {ours['seconds']:.0f} | {theirs['seconds']:.0f} | {ratio:.2f} | "
                     f"{gib(above(ours))} | {gib(above(theirs))} | {'met' if ratio <= 0.5 else 'MISSED'}, "
                     f"{'met' if above(ours) <= TARGET_BYTES else 'MISSED'} |")
    lines.append("")
    default, big = done["default"], done["big"]
    if default:
        lines.append(f"Default template merge (2 models, tgmd, drop 0.1, max_iterations 100, stop precision, budget "
                     f"2 GiB): {default['seconds']:.0f} s, peak {gib(above(default))} above pre-merge.")
    if big:
        lines.append(f"Pack only, tgmd at N = {BIG_COUNT} (the distinct files listed again): {big['seconds']:.0f} s, "
                     f"peak RSS {gib(above(big))} above pre-merge "
                     f"({'met' if above(big) <= TARGET_BYTES else 'MISSED'}).")
    notes = {"ties": "same recipe: differences are rounding (sd-mecha sums in a different order)",
             "geometric_median": "same recipe; sd-mecha's median of θᵢ vs the pack's θ₀ + median of τᵢ: rounding",
             "tgmd": "dropout masks from different RNGs (pack: SHA-256-seeded torch generator per 2²⁰-element "
                     "block; sd-mecha: torch.bernoulli with one generator per key): not comparable element-wise"}
    lines += ["", "Max |pack − sd-mecha| over every float tensor of the outputs (fp16), beside the largest |merged "
              "delta| of the pack's output:", "", "| method | N | max abs difference | max abs delta | note |",
              "|---|---|---|---|---|"]
    for method, count, worst, scale in done["diffs"]:
        lines.append(f"| {method} | {count} | {worst:.3g} | {scale:.3g} | {notes[method]} |")
    lines.append("")
    publish("merge_speed", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(main(sys.argv[1:]))
