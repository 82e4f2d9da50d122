"""Lyra-XL on CPU: loading a full-size v2 checkpoint (time, peak RSS) and the Lyra step vs the plain SDXL encode.

Run from the repo root with ComfyUI provisioned: ``python -m bench.lyra_xl [--runs 5] [--threads N]``.

Fixtures (random weights, real shapes): the v2-hard layout of AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious
(138,558,475 params with the training-only ``cross_modal_projections``; fp32 ``weights/lyra_best.safetensors`` with
``config.json`` one folder up, as published) and the v2-soft layout as a trainer ``model.pt`` (135,409,675 params),
each loaded by the real ``LyraLoader`` in an in-process ComfyUI; the SDXL single-file fixture (full CLIP-L + CLIP-G).

Measured:
* **load** — ``LyraLoader.load`` wall time; peak RSS rise (VmHWM after − RSS before), before anything else is loaded;
* **encode** — round-robin medians of ``--runs`` rounds after 2 warm-ups: the stock ``CLIPTextEncode`` of the prompt
  on the SDXL CLIP, and the Lyra step of Lyra Encode SDXL (``lyra.transform_sdxl_conditioning``, chunk 0, mode mean)
  on that conditioning with flan-t5-xl states stood in by a random ``[1, 77, 2048]`` tensor (the step's cost does not
  depend on the values; the flan-t5-xl encode itself is ComfyUI's T5 and is not timed here).
"""
from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import (
    apply_common_args,
    bench_parser,
    boot_comfy,
    command_line,
    gib,
    machine_line,
    median,
    peak_rss_bytes,
    publish_lines,
    reset_rss_peak,
    status_bytes,
)

PROMPT = "a watercolor painting of a lighthouse on a cliff at dusk, soft light, seagulls, dramatic clouds"


def main(argv: list[str] | None = None) -> str:
    parser = bench_parser(__doc__, runs=5)
    args = parser.parse_args(argv)
    apply_common_args(args)

    from testbed.env import place_model
    from testbed.fixtures.lyra_xl_files import FULL, V2_HARD, V2_SOFT, config_for, random_state, write_published
    from testbed.fixtures.sdxl_files import build_sdxl_fixture

    rows = []
    with tempfile.TemporaryDirectory(prefix="lune-bench-lyra-xl-") as tmp:
        tmp = Path(tmp)
        comfy = boot_comfy(tmp / "base")
        names = {}
        for kind, form in ((V2_HARD, "weights"), (V2_SOFT, "trainer")):
            state = random_state(kind, FULL, seed=0)
            path = write_published(tmp / kind, kind, state, form, config_for(kind, FULL))
            del state
            folder = place_model(comfy.base_dir, "lyra", tmp / kind, f"bench_{kind}")
            names[kind] = (f"{folder}/{path.relative_to(tmp / kind).as_posix()}", path.stat().st_size)
        nodes = comfy.nodes
        pack = sys.modules[nodes.NODE_CLASS_MAPPINGS["LyraEncodeSDXL"].__module__]
        loader = nodes.NODE_CLASS_MAPPINGS["LyraLoader"]()
        loaded = {}
        for kind, (name, size) in names.items():
            before = reset_rss_peak()
            start = time.perf_counter()
            patcher = loader.load(name, device="cpu")[0]
            vae = pack.lyra_model.ready(patcher)
            seconds = time.perf_counter() - start
            params = sum(p.numel() for p in vae.parameters())
            rows.append((kind, name, size, params, seconds, peak_rss_bytes() - before, status_bytes("VmRSS") - before))
            loaded[kind] = patcher
        ckpt = place_model(comfy.base_dir, "checkpoints", build_sdxl_fixture(None).single_file, "sdxl.safetensors")
        clip = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[1]
        cond = nodes.CLIPTextEncode().encode(clip, PROMPT)[0][0][0]
        t5 = torch.randn(1, 77, 2048, generator=torch.Generator().manual_seed(0))

        def lyra_step(kind):
            return lambda: pack.transform_sdxl_conditioning(pack.lyra_model.ready(loaded[kind]), cond, t5)

        fns = {"sdxl": lambda: nodes.CLIPTextEncode().encode(clip, PROMPT), V2_HARD: lyra_step(V2_HARD),
               V2_SOFT: lyra_step(V2_SOFT)}
        with torch.inference_mode():
            for _ in range(2):
                for fn in fns.values():
                    fn()
            samples = {k: [] for k in fns}
            for _ in range(args.runs):
                for k, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    samples[k].append(time.perf_counter() - start)
        med = {k: median(v) for k, v in samples.items()}

    lines = [
        "# Lyra-XL: loading a full-size v2 checkpoint, and the Lyra step vs the plain SDXL encode (CPU)",
        "",
        f"Machine: {machine_line()}, {platform.processor() or 'cpu'}, torch threads {torch.get_num_threads()}.",
        "Random weights in the published layouts (fixtures: testbed/fixtures/lyra_xl_files.py), loaded by the real "
        "Load Lyra in an in-process ComfyUI 0.3.75, fp32 on CPU.",
        "",
        "| layout | file | size | params (loaded) | load s | peak RSS rise | RSS after |",
        "|---|---|---:|---:|---:|---:|---:|",
        *[f"| {k} | `{n}` | {gib(s)} | {p:,} | {t:.2f} | {gib(h)} | {gib(r)} |" for k, n, s, p, t, h, r in rows],
        "",
        "params (loaded) excludes the training-only cross_modal_projections the files carry.",
        "",
        f"Encode, median of {args.runs} rounds after 2 warm-ups (round-robin); prompt {PROMPT!r}:",
        "",
        "| step | median ms | × plain SDXL encode |",
        "|---|---:|---:|",
        f"| CLIPTextEncode, SDXL CLIP-L + CLIP-G (stock) | {med['sdxl'] * 1000:.1f} | 1.000 |",
        *[f"| Lyra step, {k} (chunk 0, mean) | {med[k] * 1000:.1f} | {med[k] / med['sdxl']:.3f} |"
          for k in (V2_HARD, V2_SOFT)],
        "",
        "Not included: the flan-t5-xl encode (1.2 B params, ComfyUI's T5), which dominates Lyra Encode SDXL on CPU.",
        "",
        "Command: " + command_line("bench.lyra_xl", parser, args),
    ]
    return publish_lines("lyra_xl", lines)


if __name__ == "__main__":
    main()
