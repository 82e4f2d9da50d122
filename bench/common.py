"""Shared bits of the benchmarks: run a measurement in a fresh subprocess, report peak RSS and time, tables."""
from __future__ import annotations

import json
import os
import re
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = PACK_DIR / "bench" / "results"


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM, RssAnon, …), in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    try:
        return status_bytes("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_rss_peak() -> int:
    """Reset VmHWM to the current VmRSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); returns VmRSS in bytes."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def child_report(**values) -> None:
    """Called at the end of a measurement subprocess: prints one JSON line the parent reads."""
    values.setdefault("peak_rss", peak_rss_bytes())
    sys.stdout.write("BENCH " + json.dumps(values) + "\n")
    sys.stdout.flush()


SUPPORTED_VERSIONS = ("0.3.75", "0.28.2")


def version_envs(versions: list[str] | None = None) -> dict[str, dict[str, str]]:
    """{ComfyUI version: the variables of its provisioned environment} read from ``$LUNE_ENV_DIR/env-<version>.sh``
    (written by .ci/provision.sh: LUNE_PYTHON, COMFYUI_PATH, RES4LYF_PATH); versions not provisioned are left out."""
    env_dir = Path(os.environ.get("LUNE_ENV_DIR", Path.home() / ".cache" / "comfyui-lune"))
    found = {}
    for version in versions or SUPPORTED_VERSIONS:
        script = env_dir / f"env-{version}.sh"
        if not script.is_file():
            continue
        values = dict(re.findall(r'^export (\w+)="([^"]*)"', script.read_text(), re.M))
        if values.get("LUNE_PYTHON") and values.get("COMFYUI_PATH"):
            found[version] = values
    if not found:
        raise SystemExit(f"no provisioned ComfyUI under {env_dir}: run `make env` first")
    return found


def run_child(module: str, *args: str, timeout: float = 1800, env: dict[str, str] | None = None) -> dict:
    """Run ``python -m module args`` in a fresh process (clean RSS), return its BENCH JSON plus wall time. ``env``
    (from ``version_envs``) runs it under another provisioned ComfyUI version and its Python."""
    start = time.perf_counter()
    python = (env or {}).get("LUNE_PYTHON", sys.executable)
    proc = subprocess.run([python, "-m", module, *args], cwd=PACK_DIR, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {}), PYTHONPATH=str(PACK_DIR)))
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][6:])
    out["wall"] = wall
    return out


def bench_parser(doc: str, runs: int):
    """The options every in-process benchmark takes: ``--runs`` and ``--threads`` (torch intra-op threads)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    return parser


def command_line(module: str, parser, args) -> str:
    """``python -m <module>`` with the options of ``args`` that differ from ``parser``'s defaults (options that take
    a value), as a Markdown code span: the command that reproduces a result table."""
    defaults = vars(parser.parse_args([]))
    options = "".join(f" --{name.replace('_', '-')} {value}" for name, value in vars(args).items()
                      if value != defaults.get(name))
    return f"`python -m {module}{options}`"


def apply_common_args(args) -> None:
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)


def boot_comfy(base: Path):
    """The in-process ComfyUI (pack loaded) over a fresh base directory ``base``."""
    from testbed.env import make_base_dir
    from testbed.inprocess import InProcessComfy, configure_args

    make_base_dir(base)
    configure_args(base)
    return InProcessComfy(base)


def run_loader(nodes, loader: str, model_name: str):
    """(MODEL, CLIP, VAE) of ``model_name`` through the pack's Load Lune Model (``pack*`` cases) or a stock loader."""
    if loader.startswith("pack"):
        return nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]().load(model_name, "lune-flux", 2.0, "(from model file)")
    if loader == "CheckpointLoaderSimple":
        return nodes.CheckpointLoaderSimple().load_checkpoint(model_name)
    if loader == "UNETLoader":
        return nodes.UNETLoader().load_unet(model_name, "default")
    raise SystemExit(f"unknown loader {loader}")


def median(values) -> float:
    return statistics.median(values)


def machine_line() -> str:
    import torch

    memory_gib = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def write_results(name: str, markdown: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown)
    return path


def publish(name: str, text: str) -> int:
    """Print a result table and write it to bench/results/<name>.md; returns 0 (the case ran)."""
    print(text)
    print(f"written to {write_results(name, text)}")
    return 0


def publish_lines(name: str, lines: list[str]) -> str:
    """``publish`` the Markdown made of ``lines``; returns that Markdown."""
    markdown = "\n".join(lines) + "\n"
    publish(name, markdown)
    return markdown
