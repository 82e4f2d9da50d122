"""Helpers shared by the hardening tests: extra ComfyUI servers (own base dir, own environment), queueing
without waiting, reading outputs, API graphs for stock / Lune / Lyra runs, and process/file measurements."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import torch

from testbed.fixtures.bad_inputs import read_latent
from testbed.env import MODEL_SUBDIRS, make_base_dir, place_model
from testbed.server import ComfyServer, execution_error

FROM_FILE = "(from model file)"


# ------------------------------------------------------------------------------------------------ servers

@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Temporarily set (or, with None, unset) environment variables — ComfyServer copies os.environ when built."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_base(root: Path, *, with_pack: bool = True, models: dict[str, dict[str, Path]] | None = None) -> Path:
    """A ComfyUI --base-directory. ``with_pack=False`` builds the same tree by hand without the
    custom_nodes/ComfyUI-Lune link (a stock ComfyUI). ``models``: {folder: {name: source path}} symlinked in."""
    root.mkdir(parents=True, exist_ok=True)
    if with_pack:
        make_base_dir(root)
    else:
        for sub in ("custom_nodes", "input", "output", "temp", "user/default", *(f"models/{m}" for m in MODEL_SUBDIRS)):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    for folder, entries in (models or {}).items():
        for name, src in entries.items():
            place_model(root, folder, src, name)
    return root


def start_server(base: Path, **env: str | None) -> ComfyServer:
    """A ComfyServer over ``base`` whose process sees ``env`` on top of ours (HF_HUB_OFFLINE=1 by default)."""
    with environ(**env):
        server = ComfyServer(base)
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise


# ------------------------------------------------------------------------------------------------ prompts

def submit(server: ComfyServer, prompt: dict) -> tuple[str | None, dict]:
    """POST a prompt without waiting: (prompt_id, body) or (None, 400 body)."""
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    return (body["prompt_id"] if status == 200 else None), body


def wait(server: ComfyServer, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = server.get(f"/history/{prompt_id}")
        entry = hist.get(prompt_id)
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI died while running a prompt:\n{server.log_tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")


def succeeded(entry: dict) -> bool:
    return "rejected" not in entry and entry["status"]["status_str"] == "success"


def describe_failure(entry: dict) -> str:
    if "rejected" in entry:
        return json.dumps(entry["rejected"])
    err = execution_error(entry)
    return json.dumps(err)[:3000] if err else json.dumps(entry.get("status"))[:3000]


def output_files(base: Path, entry: dict, kind: str) -> list[Path]:
    return [base / "output" / item.get("subfolder", "") / item["filename"]
            for out in entry.get("outputs", {}).values() for item in out.get(kind, [])]


def output_latent(base: Path, entry: dict) -> torch.Tensor:
    files = output_files(base, entry, "latents")
    assert len(files) == 1, f"expected one saved latent, got {files}"
    return read_latent(files[0])


# ------------------------------------------------------------------------------------------------ graphs

def stock_graph(ckpt: str, *, seed: int = 0, steps: int = 3, size: int = 64, sampler: str = "euler",
                scheduler: str = "simple", prefix: str = "stock") -> dict:
    """ComfyUI's own txt2img: CheckpointLoaderSimple → KSampler → SaveLatent (no pack node)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.5,
                                                   "sampler_name": sampler, "scheduler": scheduler,
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}},
    }


def lune_latent_graph(model_name: str, *, shifts: tuple[float, ...] = (), loader_shift: float = 2.0,
                      variant: str = "lune-flux", clip_vae_from: str = FROM_FILE, seed: int = 0, steps: int = 3,
                      size: int = 64, sampler: str = "euler", scheduler: str = "simple",
                      prefix: str = "lune") -> dict:
    """LuneModelLoader → (LuneShift × len(shifts), chained) → KSampler → SaveLatent."""
    g = stock_graph("unused", seed=seed, steps=steps, size=size, sampler=sampler, scheduler=scheduler, prefix=prefix)
    g["1"] = {"class_type": "LuneModelLoader", "inputs": {"model_name": model_name, "variant": variant,
                                                          "shift": loader_shift, "clip_vae_from": clip_vae_from}}
    model = ["1", 0]
    for i, s in enumerate(shifts):
        g[f"s{i}"] = {"class_type": "LuneShift", "inputs": {"model": model, "shift": s}}
        model = [f"s{i}", 0]
    g["5"]["inputs"]["model"] = model
    return g


def lyra_graph(ckpt: str, t5: str, lyra: str, *, clip: list | None = None, positive: str = "a lighthouse at dusk",
               negative: str = "", seed: int = 0, steps: int = 2, size: int = 64, prefix: str = "lyra") -> dict:
    """LuneModelLoader + CLIPLoader(t5-base, type stable_audio) + LyraLoader → LyraEncode ×2 → KSampler → PNG."""
    clip = clip or ["1", 1]
    return {
        "1": {"class_type": "LuneModelLoader", "inputs": {"model_name": ckpt, "variant": "lune-flux", "shift": 2.0,
                                                          "clip_vae_from": FROM_FILE}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": t5, "type": "stable_audio"}},
        "3": {"class_type": "LyraLoader", "inputs": {"lyra_name": lyra}},
        "4": {"class_type": "LyraEncode", "inputs": {"clip": clip, "t5": ["2", 0], "lyra": ["3", 0],
                                                     "text": positive, "mode": "mean", "seed": 0, "strength": 1.0}},
        "5": {"class_type": "LyraEncode", "inputs": {"clip": clip, "t5": ["2", 0], "lyra": ["3", 0],
                                                     "text": negative, "mode": "mean", "seed": 0, "strength": 1.0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


# ------------------------------------------------------------------------------------------------ measurements

def rss_kb(pid: int) -> int:
    """VmRSS of a process in kB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


FULL_HASH_LIMIT = 16 << 20
EDGE = 1 << 20


def fingerprint(path: Path) -> str:
    """sha256 of a small file; for a large one sha256 of size + mtime + first and last MiB (fast, and any
    rewrite, truncation or append shows up)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return "full:" + h.hexdigest()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(f.read(EDGE))
        f.seek(st.st_size - EDGE)
        h.update(f.read(EDGE))
    return "edges:" + h.hexdigest()


def fingerprint_tree(root: Path) -> dict[str, str]:
    """{relative path: fingerprint} of every file under ``root`` (following symlinks, as ComfyUI does)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file():
                out[str(p.relative_to(root))] = fingerprint(p)
    return out
