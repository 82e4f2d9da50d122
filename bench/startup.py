"""ComfyUI start-up with and without the pack, and the pack's own import cost.

    python -m bench.startup

* server: time from process start to the first ``/object_info`` answer, with the pack linked vs not (same base
  layout otherwise), alternating, REPEATS each;
* import: in a process that already imported ComfyUI (as a real start-up has), the time of
  ``nodes.load_custom_node(<pack>)`` and the modules it newly imports (nothing heavy may appear).
Target: the pack adds ≤ 0.3 s.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .common import publish, child_report, machine_line, median, run_child

REPEATS = 3
TARGET_S = 0.3
HEAVY = ("transformers", "diffusers", "huggingface_hub", "matplotlib", "scipy", "cv2", "onnxruntime")


def _server_start_seconds(with_pack: bool) -> float:
    from testbed.env import make_base_dir
    from testbed.server import ComfyServer

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-startup-")))
    if not with_pack:
        (base / "custom_nodes" / "ComfyUI-Lune").unlink()
    server = ComfyServer(base)
    start = time.perf_counter()
    try:
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(server.log_tail())
            try:
                urllib.request.urlopen(server.url + "/object_info/KSampler", timeout=2).read()
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def child_import() -> None:
    import asyncio

    from testbed.env import PACK_DIR, make_base_dir
    from testbed.inprocess import configure_args

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-import-")))
    configure_args(base)
    import utils.install_util  # noqa: F401
    import server  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    before = set(sys.modules)
    start = time.perf_counter()
    ok = asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
    seconds = time.perf_counter() - start
    # ComfyUI registers the pack itself under its directory path; list only what the pack pulls in
    new = sorted({m.split(".")[0] for m in set(sys.modules) - before if os.sep not in m and "/" not in m})
    child_report(seconds=seconds, ok=bool(ok), new_top_level=new)


def main() -> int:
    starts = {True: [], False: []}
    _server_start_seconds(True)  # warm-up (page cache, .pyc)
    for _ in range(REPEATS):
        for with_pack in (True, False):
            starts[with_pack].append(_server_start_seconds(with_pack))
    imports = [run_child("bench.startup", "--child-import") for _ in range(REPEATS)]
    imp = median(r["seconds"] for r in imports)
    new = imports[0]["new_top_level"]
    heavy = [m for m in new if m in HEAVY]
    with_s, without_s = median(starts[True]), median(starts[False])
    text = "\n".join([
        "# ComfyUI start-up with and without ComfyUI-Lune", "",
        f"Machine: {machine_line()}. Command: `python -m bench.startup`. Median of {REPEATS}, alternating.", "",
        "| measure | value | target |", "|---|---|---|",
        f"| server start → first /object_info, with pack | {with_s:.2f} s | |",
        f"| server start → first /object_info, without pack | {without_s:.2f} s | |",
        f"| difference (noisy: two separate processes) | {with_s - without_s:+.2f} s | ≤ {TARGET_S} s |",
        f"| pack import inside a started ComfyUI (`load_custom_node`) | {imp:.3f} s | ≤ {TARGET_S} s: "
        f"{'met' if imp <= TARGET_S else 'MISSED'} |",
        f"| top-level modules the pack newly imports | {', '.join(new) or '—'} | no heavy ones: "
        f"{'met' if not heavy else 'MISSED ' + ', '.join(heavy)} |", ""])
    return publish("startup", text)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child-import":
        child_import()
    else:
        sys.exit(main())
