"""The README's demo: run the default bundled workflow through a real ComfyUI server and write a PNG.

Weights: ``LUNE_MODEL`` (a Lune file or diffusers folder) and ``LUNE_CLIP_VAE`` (an SD1.5 checkpoint, needed for
UNet-only files) when set; with ``LUNE_DOWNLOAD=1`` the lune-flux UNet is fetched from Hugging Face. Otherwise a
random-weight stand-in with the real SD1.5 layout is used, and the job says so: the image is then noise.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from .build_workflows import DEFAULT_WORKFLOW, WORKFLOWS_DIR
from testbed.env import PACK_DIR, make_base_dir, place_model
from testbed.server import ComfyServer, execution_error
from testbed.ui_workflow import to_api

log = logging.getLogger("lune.demo")
ARTIFACTS = PACK_DIR / "artifacts" / "demo"


STANDIN_OVERRIDES = {"EmptyLatentImage": {"width": 256, "height": 256}, "KSampler": {"steps": 10}}


def _models(base: Path) -> tuple[str, str, str]:
    """(model_name, clip_vae_from, description) placed into ``base``'s model folders."""
    model = os.environ.get("LUNE_MODEL")
    companion = os.environ.get("LUNE_CLIP_VAE")
    if model:
        src = Path(model).expanduser().resolve()
        folder = "checkpoints" if src.is_file() and not companion else "diffusion_models"
        name = place_model(base, folder, src)
        if src.is_dir():
            name += "/unet/diffusion_pytorch_model.safetensors"
        comp = (place_model(base, "checkpoints", Path(companion).expanduser().resolve()) if companion
                else "(from model file)")
        return name, comp, f"real weights from {src}"
    if os.environ.get("LUNE_DOWNLOAD") == "1":
        from comfyui_lune.lune import hub
        from comfyui_lune.lune.variants import get_variant

        v = get_variant("lune-flux")
        path = hub.fetch(v.hf_repo, v.hf_unet_file, str(base / "models" / "diffusion_models" / "lune-flux"))
        if not companion:
            raise SystemExit("LUNE_DOWNLOAD=1 fetched the UNet; also set LUNE_CLIP_VAE to an SD1.5 checkpoint")
        name = place_model(base, "diffusion_models", Path(path))
        return name, place_model(base, "checkpoints", Path(companion)), f"downloaded {v.hf_repo}"
    from testbed.fixtures.sd15_files import build_sd15_fixtures

    fx = build_sd15_fixtures(None, size="tiny", seed=0)
    name = place_model(base, "checkpoints", fx.single_file, "lune_standin_random_weights.safetensors")
    return name, "(from model file)", ("NO REAL LUNE WEIGHTS (set LUNE_MODEL=/path, or LUNE_DOWNLOAD=1 online): "
                                       "running on a RANDOM-WEIGHT stand-in with the real SD1.5 layout — "
                                       "the image will be noise; 256x256, 10 steps to keep it quick on a CPU")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = ARTIFACTS / "comfy-base"
    shutil.rmtree(base, ignore_errors=True)
    make_base_dir(base)
    model_name, companion, description = _models(base)
    log.info("weights: %s", description)
    workflow = json.loads((WORKFLOWS_DIR / f"{DEFAULT_WORKFLOW}.json").read_text())
    server = ComfyServer(base)
    try:
        server.wait_ready()
        prompt = to_api(workflow, server.get("/object_info"))
        standin = "RANDOM-WEIGHT" in description
        for node in prompt.values():
            if node["class_type"] == "LuneModelLoader":
                node["inputs"].update(model_name=model_name, clip_vae_from=companion)
            if standin:
                node["inputs"].update(STANDIN_OVERRIDES.get(node["class_type"], {}))
        log.info("running workflows/%s.json through ComfyUI at %s", DEFAULT_WORKFLOW, server.url)
        entry = server.run(prompt, timeout=1800)
        if "rejected" in entry or entry["status"]["status_str"] != "success":
            log.error("the workflow failed: %s", entry.get("rejected") or execution_error(entry))
            return 1
        images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
        src = base / "output" / images[0].get("subfolder", "") / images[0]["filename"]
        dst = ARTIFACTS / "lune_demo.png"
        shutil.copyfile(src, dst)
        log.info("wrote %s (%s)", dst, description)
        print(dst)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
