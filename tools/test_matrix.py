"""The test matrix behind `make test`: the unit tests once, then the ComfyUI suites (tests/integration, tests/browser)
on every provisioned ComfyUI version, each in its own pytest process with that version's environment
(``$LUNE_ENV_DIR/env-<version>.sh``, written by .ci/provision.sh). Ends with a summary over all runs whose last line
is ``N passed, N failed, N skipped``; exits non-zero when any run failed.

    python tools/test_matrix.py [--versions 0.3.75,0.28.2] [--suites PATHS] [--no-unit] [--no-comfy] [-- PYTEST_ARGS]

PYTEST_ARGS (e.g. ``-m "not slow"`` or ``-k loader``) go to every run. Each run writes its output and a JUnit XML
under artifacts/test-matrix/. Needs only the standard library (it runs before any venv is trusted).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
ENV_DIR = Path(os.environ.get("LUNE_ENV_DIR", Path.home() / ".cache" / "comfyui-lune")).expanduser()
VERSIONS = ("0.3.75", "0.28.2")
UNIT_VERSION = "0.3.75"
COMFY_SUITES = ("tests/integration", "tests/browser")
OUT_DIR = PACK_DIR / "artifacts" / "test-matrix"


@dataclass
class Run:
    label: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    note: str = ""
    failures: tuple[str, ...] = ()


def version_env(version: str) -> dict[str, str]:
    """os.environ plus what env-<version>.sh exports (sourced by bash, so the file stays the one definition)."""
    env_file = ENV_DIR / f"env-{version}.sh"
    if not env_file.is_file():
        raise SystemExit(f"{env_file} missing: run `bash .ci/provision.sh` (or `make env`) first")
    out = subprocess.run(["bash", "-c", f". {shlex.quote(str(env_file))} && env -0"], check=True,
                         capture_output=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def counts(junit: Path) -> tuple[int, int, int] | None:
    """(passed, failed, skipped) from a pytest JUnit XML; errors count as failed."""
    if not junit.is_file():
        return None
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = total["failures"] + total["errors"]
    return total["tests"] - failed - total["skipped"], failed, total["skipped"]


def failed_ids(junit: Path) -> list[str]:
    """The failed/errored test cases of a JUnit XML as ``file::name`` (classname dots become path parts)."""
    if not junit.is_file():
        return []
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return out


def run_pytest(label: str, version: str, paths: list[str], extra: list[str]) -> Run:
    env = version_env(version)
    python = env.get("LUNE_PYTHON") or str(ENV_DIR / "venv" / "bin" / "python")  # unavailable: skipped, see conftest
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    junit, log = OUT_DIR / f"{label}.xml", OUT_DIR / f"{label}.log"
    junit.unlink(missing_ok=True)
    cmd = [python, "-m", "pytest", *paths, f"--junitxml={junit}", "-o", f"junit_suite_name={label}", *extra]
    banner = f"===== {label}: ComfyUI {version}: {' '.join(shlex.quote(c) for c in cmd[1:])}"
    print(banner, flush=True)
    start = time.monotonic()
    with open(log, "w") as log_file:
        log_file.write(banner + "\n")
        proc = subprocess.Popen(cmd, cwd=PACK_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            log_file.write(line)
        code = proc.wait()
    run = Run(label, seconds=time.monotonic() - start)
    got = counts(junit)
    if got is not None:
        run.passed, run.failed, run.skipped = got
        run.failures = tuple(failed_ids(junit))
    if code not in (0, 5) and run.failed == 0:  # interrupted, internal error, usage error: the run itself failed
        run.failed, run.note = 1, f"pytest exited {code} with no failed test recorded (see {log})"
    elif code == 5:
        run.note = "no tests collected"
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", default=",".join(VERSIONS), help="comma-separated ComfyUI versions")
    parser.add_argument("--no-unit", action="store_true", help="skip the unit run")
    parser.add_argument("--no-comfy", action="store_true", help="skip the per-version ComfyUI runs")
    parser.add_argument("--suites", default=",".join(COMFY_SUITES),
                        help="comma-separated test paths for the per-version runs")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to every pytest run")
    args = parser.parse_args(argv)
    runs = []
    if not args.no_unit:
        ignore = [f"--ignore={s}" for s in COMFY_SUITES]
        runs.append(run_pytest("unit", UNIT_VERSION, ["tests", *ignore], args.pytest_args))
    if not args.no_comfy:
        for version in [v.strip() for v in args.versions.split(",") if v.strip()]:
            suites = [p for p in args.suites.split(",") if p]
            runs.append(run_pytest(f"comfyui-{version}", version, suites, args.pytest_args))
    print("\n===== test matrix summary", flush=True)
    for r in runs:
        note = f"  ({r.note})" if r.note else ""
        print(f"  {r.label:<16} {r.passed:5d} passed {r.failed:4d} failed {r.skipped:4d} skipped "
              f"{r.seconds / 60:6.1f} min{note}")
    for r in runs:
        for test_id in r.failures:
            print(f"  FAILED [{r.label}] {test_id}")
    passed, failed, skipped = (sum(getattr(r, k) for r in runs) for k in ("passed", "failed", "skipped"))
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
