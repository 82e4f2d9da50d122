"""Run every benchmark, each in its own process, and print their tables (``make bench``).

Exits non-zero only if a case failed to run; missed targets are reported in the tables, not as failures.
"""
from __future__ import annotations

import logging
import subprocess
import sys

from .common import PACK_DIR

BENCHES = ("bench.startup", "bench.load", "bench.load_memory", "bench.pt_load", "bench.sampling", "bench.lyra_encode",
           "bench.handoff", "bench.discrete_schedule", "bench.merge_speed")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s")
    failed = []
    for name in BENCHES:
        logging.info("running %s", name)
        if subprocess.run([sys.executable, "-m", name], cwd=PACK_DIR).returncode != 0:
            failed.append(name)
    if failed:
        logging.error("failed to run: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
