"""Node-level peak memory of a model load: Load Lune Model vs the stock loaders for the same weights (full size).

    python -m bench.load_memory [--repeats N]     (default 2; the larger peak of the N runs is reported)

Measured per case in a fresh process (ComfyUI booted first): the peak resident set above the resident set just
before the node runs, over reading the file + building and filling the model + the first UNet call (a memory-
mapped weight only becomes resident when used, so a load that defers reading would look cheap without it).
The peak is the kernel's high-water mark (VmHWM), reset right before the load (/proc/self/clear_refs, value 5).

Rows: the pack; the pack with ComfyUI's stock model fill (``comfy.sd`` builders, how the pack loaded before); the
stock loader for the format (CheckpointLoaderSimple, UNETLoader; none reads a training-state .pt).
Target: every format through the pack ≤ 1.3 × the UNet's fp32 bytes.
"""
from __future__ import annotations

import gc
import sys
import time

from .common import child_report, gib, machine_line, publish, run_child, run_loader

TARGET = 1.3
REPEATS = 2
FORMATS = ("single_file", "diffusers", "training_state", "bare_diffusers")
STOCK_LOADER = {"single_file": "CheckpointLoaderSimple", "diffusers": "UNETLoader", "bare_diffusers": "UNETLoader"}
LOADER_LABELS = {"pack": "Load Lune Model", "pack_stock_fill": "Load Lune Model, stock fill (before)"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset VmHWM to the current VmRSS (Linux ≥ 4.0); returns the current resident bytes."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _use_stock_fill(comfy_nodes) -> None:
    """Make the pack's loader call ComfyUI's builders directly (this benchmark process only)."""
    import comfy.sd

    loader = sys.modules[comfy_nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"].__module__]

    def load_checkpoint(sd, metadata=None, embedding_directory=None):
        out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True, metadata=metadata,
                                                    embedding_directory=embedding_directory)
        return None if out is None else out[:3]

    loader.model_fill.load_checkpoint = load_checkpoint
    loader.model_fill.load_unet = lambda sd, metadata=None: comfy.sd.load_diffusion_model_state_dict(
        sd, metadata=metadata)


def _first_unet_call(patcher) -> None:
    import comfy.model_management
    import torch

    comfy.model_management.load_models_gpu([patcher])
    with torch.no_grad():
        patcher.model.apply_model(torch.randn(1, 4, 8, 8), torch.full((1,), 0.5),
                                  c_crossattn=torch.zeros(1, 77, 768))


def child(loader: str, fmt: str) -> None:
    from .comfy_child import boot_with_full_models

    comfy, names = boot_with_full_models()
    nodes = comfy.nodes
    if loader == "pack_stock_fill":
        _use_stock_fill(nodes)
    base_rss = _reset_peak()
    start = time.perf_counter()
    out = run_loader(nodes, loader, names[fmt])
    load_seconds = time.perf_counter() - start
    _first_unet_call(out[0])
    unet = out[0].model.diffusion_model
    child_report(load_seconds=load_seconds, base_rss=base_rss, peak_rss=_status_kib("VmHWM") * 1024,
                 unet_fp32_bytes=sum(p.numel() for p in unet.parameters()) * 4)


def _row(fmt: str, loader: str, runs: list[dict]) -> tuple[str, float]:
    above = max(r["peak_rss"] - r["base_rss"] for r in runs)
    unet = runs[0]["unet_fp32_bytes"]
    seconds = sorted(r["load_seconds"] for r in runs)[len(runs) // 2]
    ratio = above / unet
    verdict = (f"≤ {TARGET} {'met' if ratio <= TARGET else 'MISSED'}" if loader == "pack" else "—")
    label = LOADER_LABELS.get(loader, f"stock {loader}")
    return f"| {fmt} | {label} | {gib(above)} | {ratio:.2f} | {seconds:.2f} | {verdict} |", ratio


def main(repeats: int = REPEATS) -> int:
    from .comfy_child import full_fixture

    full_fixture()  # build once (cached) outside the measured processes
    lines = ["# Node-level load memory: Load Lune Model vs stock loaders (full-size SD1.5, random weights)", "",
             f"Machine: {machine_line()}. Command: `python -m bench.load_memory`. Fresh process per run (ComfyUI "
             f"boot not measured); peak = larger of {repeats} run(s). \"Peak above\" is the resident-set high-water "
             "mark minus the resident set just before the node ran, over read + model build/fill + first UNet "
             "call. Ratio = peak above / the UNet's fp32 bytes. The single-file rows include CLIP and VAE.", "",
             "| format | loader | peak above pre-load RSS | ratio to UNet fp32 | load time (s) | target |",
             "|---|---|---|---|---|---|"]
    unet_bytes = base = None
    missed = []
    for fmt in FORMATS:
        loaders = ["pack", "pack_stock_fill"] + ([STOCK_LOADER[fmt]] if fmt in STOCK_LOADER else [])
        runs = {name: [] for name in loaders}
        for _ in range(repeats):
            for name in loaders:
                runs[name].append(run_child("bench.load_memory", "--child", name, fmt))
        for name in loaders:
            line, ratio = _row(fmt, name, runs[name])
            lines.append(line)
            if name == "pack" and ratio > TARGET:
                missed.append(fmt)
        if fmt not in STOCK_LOADER:
            lines.append(f"| {fmt} | stock: none reads a training-state .pt | — | — | — | — |")
        unet_bytes = runs["pack"][0]["unet_fp32_bytes"]
        base = runs["pack"][0]["base_rss"]
    lines += ["", f"UNet fp32 bytes: {gib(unet_bytes)}. ComfyUI + pack resident before loading: {gib(base)}.",
              f"Target (pack ≤ {TARGET} × UNet fp32 for every format): "
              f"{'met' if not missed else 'MISSED for ' + ', '.join(missed)}.", ""]
    return publish("load_memory", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "--repeats":
        sys.exit(main(int(sys.argv[2])))
    else:
        sys.exit(main())
