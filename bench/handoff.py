"""Lune Latent Hand-off cost on CPU vs the stock VAEDecode → ImageScale → VAEEncode chain (target: ≤ 1.05 ×).

Run from the repo root with ComfyUI provisioned: ``python -m bench.handoff [--runs 3] [--batch 6] [--threads N]``.

In-process ComfyUI on a temporary base directory; TAESD-layout random VAEs (the tiny Lune checkpoint's SD1.5
VAE, the 4-channel SDXL and 16-channel Flux stand-ins from ``testbed/fixtures/sdxl_files.py``). Per pair, a random
latent of ``--batch`` samples at 256×256 px is handed off at scale 1.5 (→ 384×384) by the node and by the three
stock nodes' own functions, called round-robin (median of ``--runs`` rounds after one warm-up round). The node
works in chunks of 4 samples (one progress step each); the stock chain converts the batch at once.
"""
from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.common import apply_common_args, bench_parser, boot_comfy, command_line, machine_line, median, publish_lines

TARGET = 1.05
SCALE, SIZE = 1.5, 256
PAIRS = (("sd15", "flux"), ("flux", "sd15"), ("sd15", "sdxl"))


def main(argv: list[str] | None = None) -> str:
    parser = bench_parser(__doc__, runs=3)
    parser.add_argument("--batch", type=int, default=6)
    args = parser.parse_args(argv)
    apply_common_args(args)

    from testbed.env import place_model
    from testbed.fixtures.sd15_files import build_sd15_fixtures
    from testbed.fixtures.sdxl_files import build_tiny_vae_files

    with tempfile.TemporaryDirectory(prefix="lune-bench-handoff-") as tmp:
        comfy = boot_comfy(Path(tmp) / "base")
        nodes = comfy.nodes
        vae_files = build_tiny_vae_files(None)
        ckpt = place_model(comfy.base_dir, "checkpoints", build_sd15_fixtures(None, "tiny").single_file, "lune.sft")
        vaes = {"sd15": nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[2]}
        for family, path in (("sdxl", vae_files.vae_4ch_sdxl), ("flux", vae_files.vae_16ch_flux)):
            vaes[family] = nodes.VAELoader().load_vae(place_model(comfy.base_dir, "vae", path))[0]
        handoff = nodes.NODE_CLASS_MAPPINGS["LuneLatentHandoff"]()
        out_size = round(SIZE * SCALE / 8) * 8

        def stock(latent, source, target):
            images = nodes.VAEDecode().decode(source, {"samples": latent})[0]
            images = nodes.ImageScale().upscale(images, "bicubic", out_size, out_size, "disabled")[0]
            return nodes.VAEEncode().encode(target, images)[0]["samples"]

        rows = []
        for source, target in PAIRS:
            gen = torch.Generator().manual_seed(0)
            latent = torch.randn(args.batch, vaes[source].latent_channels, SIZE // 8, SIZE // 8, generator=gen)
            src, dst = vaes[source], vaes[target]
            fns = {
                "node": lambda x=latent, a=src, b=dst: handoff.handoff({"samples": x}, a, b, SCALE, "bicubic"),
                "stock": lambda x=latent, a=src, b=dst: stock(x, a, b),
            }
            rounds = []
            with torch.inference_mode():
                for fn in fns.values():
                    fn()
                for _ in range(args.runs):
                    sample = {}
                    for name, fn in fns.items():
                        start = time.perf_counter()
                        fn()
                        sample[name] = time.perf_counter() - start
                    rounds.append(sample)
            t_node, t_stock = median([r["node"] for r in rounds]), median([r["stock"] for r in rounds])
            rows.append((f"{source} → {target}", t_node, t_stock, t_node / t_stock))

    worst = max(r[3] for r in rows)
    verdict = "meets" if worst <= TARGET else "MISSES"
    lines = [
        "# Lune Latent Hand-off vs stock VAEDecode → ImageScale → VAEEncode (CPU)",
        "",
        f"Machine: {machine_line()}, {platform.processor() or 'cpu'}, torch threads {torch.get_num_threads()}.",
        f"Batch {args.batch} at {SIZE}×{SIZE} px, scale {SCALE} (→ {out_size}×{out_size}), bicubic; TAESD-layout "
        f"random VAEs. Median of {args.runs} rounds after 1 warm-up round, node and stock chain round-robin.",
        "",
        "| pair | node ms | stock ms | node / stock |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {n * 1000:.0f} | {s * 1000:.0f} | {ratio:.3f} |" for name, n, s, ratio in rows],
        "",
        f"Worst ratio **{worst:.3f}**: {verdict} the target ≤ {TARGET}.",
        "",
        "Command: " + command_line("bench.handoff", parser, args),
    ]
    return publish_lines("handoff", lines)


if __name__ == "__main__":
    main()
