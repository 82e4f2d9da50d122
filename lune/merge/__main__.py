"""Headless merge: ``python -m lune.merge BASE MODEL [MODEL …] -o OUT.safetensors --method tgmd``."""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys

from ..errors import LuneError
from .methods import METHODS, WEISZFELD_EPS, WEISZFELD_FTOL, MergeParams
from .streaming import merge_models

log = logging.getLogger("lune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lune.merge", description=__doc__)
    parser.add_argument("base", help="base checkpoint θ₀ (.safetensors or a plain-state-dict .pt)")
    parser.add_argument("models", nargs="+", help="models θᵢ to merge (globs allowed; the base is skipped)")
    parser.add_argument("-o", "--output", required=True, help="new .safetensors file (never overwritten)")
    parser.add_argument("--method", choices=METHODS, default="tgmd")
    parser.add_argument("--density", type=float, default=1.0, help="ties: kept fraction per tensor")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="dare/drop/tgmd: dropped fraction p")
    parser.add_argument("--strength", type=float, default=1.0, help="λ in θ = θ₀ + λ·τₘ")
    parser.add_argument("--seed", type=int, default=0, help="dropout masks seed")
    parser.add_argument("--max-iterations", type=int, default=100, help="Weiszfeld iterations (passes)")
    parser.add_argument("--eps", type=float, default=WEISZFELD_EPS)
    parser.add_argument("--ftol", type=float, default=WEISZFELD_FTOL)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every key")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    params = MergeParams(method=args.method, density=args.density, drop_rate=args.drop_rate,
                         strength=args.strength, seed=args.seed, max_iterations=args.max_iterations,
                         eps=args.eps, ftol=args.ftol)

    def progress(done: int, total: int, key: str) -> None:
        if args.verbose or done == total or done % 100 == 0:
            log.info("merge: %d/%d %s", done, total, key)

    try:
        merge_models(args.base, expand(args.models, args.base), args.output, params, progress=progress)
    except (LuneError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
