"""Load memory per ComfyUI version: Load Lune Model vs the stock loaders for the same full-size weights.

    python -m bench.load_memory [--repeats N] [--versions 0.3.75,0.28.2]

What decides whether a load fits is **anonymous memory** (RssAnon): clean pages of a memory-mapped file also count
in RSS, but the kernel can drop them at any time. Both are reported. Measured per case in a fresh process
(ComfyUI booted first, not measured): the peak above the value just before the node runs, over reading the file +
building the model + the first UNet call (a memory-mapped weight only becomes resident when used). Peak RSS is the
kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs); peak RssAnon is sampled every millisecond by
a thread (the kernel keeps no high-water mark for it; torch's copies release the GIL, so the sampler runs during
them).

Rows: the pack and the stock loader for the format (CheckpointLoaderSimple, UNETLoader; none reads a training-state
.pt), for each provisioned ComfyUI version (``$LUNE_ENV_DIR/env-<version>.sh``). Target: the training-state .pt,
which only the pack reads, ≤ 1.3 × the UNet's fp32 bytes in peak RssAnon.
"""
from __future__ import annotations

import sys
import threading
import time

from .common import (
    child_report,
    gib,
    machine_line,
    publish,
    reset_rss_peak,
    run_child,
    run_loader,
    status_bytes,
    version_envs,
)

TARGET = 1.3
REPEATS = 1
FORMATS = ("single_file", "diffusers", "training_state", "bare_diffusers")
STOCK_LOADER = {"single_file": "CheckpointLoaderSimple", "diffusers": "UNETLoader", "bare_diffusers": "UNETLoader"}


class AnonPeak:
    """Highest RssAnon seen while running (sampled every ``interval`` seconds by a daemon thread)."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, status_bytes("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_bytes("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_bytes("RssAnon"))


def _first_unet_call(patcher) -> None:
    import torch

    with torch.no_grad():
        patcher.model.apply_model(torch.randn(1, 4, 8, 8), torch.full((1,), 0.5),
                                  c_crossattn=torch.zeros(1, 77, 768))


def child(loader: str, fmt: str) -> None:
    from .comfy_child import boot_with_full_models

    comfy, names = boot_with_full_models()
    base_rss = reset_rss_peak()
    base_anon = status_bytes("RssAnon")
    start = time.perf_counter()
    with AnonPeak() as anon:
        out = run_loader(comfy.nodes, loader, names[fmt])
        load_seconds = time.perf_counter() - start
        _first_unet_call(out[0])
    unet = out[0].model.diffusion_model
    import comfyui_version

    child_report(load_seconds=load_seconds, base_rss=base_rss, peak_rss=status_bytes("VmHWM"),
                 base_anon=base_anon, peak_anon=anon.peak, version=comfyui_version.__version__,
                 unet_fp32_bytes=sum(p.numel() for p in unet.parameters()) * 4)


def _row(version: str, fmt: str, loader: str, runs: list[dict]) -> tuple[str, float]:
    anon = max(r["peak_anon"] - r["base_anon"] for r in runs)
    rss = max(r["peak_rss"] - r["base_rss"] for r in runs)
    unet = runs[0]["unet_fp32_bytes"]
    seconds = sorted(r["load_seconds"] for r in runs)[len(runs) // 2]
    label = "Load Lune Model" if loader == "pack" else f"stock {loader}"
    return (f"| {version} | {fmt} | {label} | {gib(anon)} | {anon / unet:.2f} | {gib(rss)} | {rss / unet:.2f} | "
            f"{seconds:.2f} |"), anon / unet


def main(repeats: int = REPEATS, versions: list[str] | None = None) -> int:
    from .comfy_child import full_fixture

    full_fixture()  # build once (cached) outside the measured processes
    envs = version_envs(versions)
    lines = ["# Load memory: Load Lune Model vs stock loaders, per ComfyUI version (full-size SD1.5, random weights)",
             "", f"Machine: {machine_line()}. Command: `python -m bench.load_memory`. Fresh process per run (ComfyUI "
             f"boot not measured); peak = larger of {repeats} run(s), above the value just before the node ran, over "
             "read + model build + first UNet call. Anonymous memory (RssAnon) is what must fit; RSS also counts "
             "clean pages of the memory-mapped file, which the kernel can drop. Ratios are to the UNet's fp32 bytes. "
             "Single-file rows include CLIP and VAE.", "",
             "| ComfyUI | format | loader | peak RssAnon above | ratio | peak RSS above | ratio | load time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    unet_bytes = None
    for version, env in envs.items():
        for fmt in FORMATS:
            loaders = ["pack"] + ([STOCK_LOADER[fmt]] if fmt in STOCK_LOADER else [])
            ratios = {}
            for name in loaders:
                runs = [run_child("bench.load_memory", "--child", name, fmt, env=env) for _ in range(repeats)]
                line, ratios[name] = _row(version, fmt, name, runs)
                lines.append(line)
                unet_bytes = runs[0]["unet_fp32_bytes"]
            if fmt == "training_state":
                verdicts.append(f"{version}: training-state .pt through the pack {ratios['pack']:.2f}× "
                                f"(target ≤ {TARGET}: {'met' if ratios['pack'] <= TARGET else 'MISSED'})")
            else:
                stock = ratios[STOCK_LOADER[fmt]]
                verdicts.append(f"{version} {fmt}: pack/stock peak RssAnon {ratios['pack'] / stock:.2f}")
    lines += ["", f"UNet fp32 bytes: {gib(unet_bytes)}.", "", *[f"- {v}" for v in verdicts], ""]
    return publish("load_memory", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--repeats", type=int, default=REPEATS)
        parser.add_argument("--versions", default="",
                            help="comma-separated ComfyUI versions (default: all provisioned)")
        args = parser.parse_args()
        sys.exit(main(args.repeats, [v for v in args.versions.split(",") if v] or None))
