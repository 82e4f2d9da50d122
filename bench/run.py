"""Run every benchmark and print their tables (``make bench``). Exits non-zero only if a case failed to run."""
from __future__ import annotations

import importlib
import logging
import sys

BENCHES = ("bench.startup", "bench.load", "bench.pt_load", "bench.sampling", "bench.lyra_encode")


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    failed = []
    for name in BENCHES:
        try:
            importlib.import_module(name).main()
        except Exception as e:  # report and continue: one broken case must not hide the others
            logging.exception("benchmark %s failed to run: %s", name, e)
            failed.append(name)
    if failed:
        logging.error("failed to run: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
