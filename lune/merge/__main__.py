"""Headless merge: ``python -m lune.merge BASE MODEL [MODEL …] -o OUT.safetensors --method tgmd``.

Diffusers-named UNet files need ComfyUI's name map and are merged through the node; the command line reads
single-file checkpoints and LDM-named UNet files.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys

from ..errors import LuneError
from .methods import METHODS, STOP_RULES, WEISZFELD_EPS, WEISZFELD_FTOL, MergeParams
from .streaming import DEFAULT_MEMORY_BUDGET_GIB, merge_models

log = logging.getLogger("lune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lune.merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="base checkpoint θ₀ (.safetensors, or a weights-only .pt/.ckpt)")
    parser.add_argument("models", nargs="+", help="models θᵢ to merge (globs allowed; the base is skipped)")
    parser.add_argument("-o", "--output", required=True, help="new .safetensors file (never overwritten; an existing "
                        "one with the same recipe is reused)")
    parser.add_argument("--method", choices=list(METHODS), default="tgmd",
                        help="; ".join(f"{k}: {m.formula}" for k, m in METHODS.items()))
    parser.add_argument("--density", type=float, default=1.0, help="ties: kept fraction per tensor")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="dare/drop/tgmd: dropped fraction p")
    parser.add_argument("--strength", type=float, default=1.0, help="λ in θ = θ₀ + λ·τₘ")
    parser.add_argument("--seed", type=int, default=0, help="dropout masks seed")
    parser.add_argument("--max-iterations", type=int, default=100, help="Weiszfeld iterations at most")
    parser.add_argument("--stop", choices=STOP_RULES, default="precision",
                        help="precision: stop when the median no longer changes the output dtype's values; "
                             "reference: the released TGMD rule (ftol, in practice max-iterations iterations)")
    parser.add_argument("--eps", type=float, default=WEISZFELD_EPS)
    parser.add_argument("--ftol", type=float, default=WEISZFELD_FTOL)
    parser.add_argument("--clip-vae-from", help="checkpoint whose CLIP/VAE fill what the merge lacks")
    parser.add_argument("--memory-budget-gib", type=float, default=DEFAULT_MEMORY_BUDGET_GIB,
                        help="memory for one key's N terms; larger keys are streamed pass by pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def expand(patterns: list[str], base: str) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise LuneError(f"{pattern!r} matches no file. Check the pattern and the folder.")
        for path in matches:
            same_as_base = os.path.exists(path) and os.path.exists(base) and os.path.samefile(path, base)
            if not same_as_base and path not in paths:
                paths.append(path)
    return paths


class _Bar:
    """A tqdm bar (huggingface_hub's re-export, already a dependency) over the work units ``merge_models`` reports."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled

    def __call__(self, done: int, total: int, key: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from huggingface_hub.utils import tqdm

            self.bar = tqdm(total=total, unit="elem", unit_scale=True, desc="merge", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    params = MergeParams(method=args.method, density=args.density, drop_rate=args.drop_rate,
                         strength=args.strength, seed=args.seed, max_iterations=args.max_iterations,
                         stop=args.stop, eps=args.eps, ftol=args.ftol)
    bar = _Bar(not args.no_progress)
    try:
        merge_models(args.base, expand(args.models, args.base), args.output, params, progress=bar,
                     clip_vae_from=args.clip_vae_from, memory_budget_gib=args.memory_budget_gib)
    except (LuneError, ValueError) as e:
        log.error("%s", e)
        return 2
    finally:
        bar.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
