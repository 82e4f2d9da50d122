"""Boot the pinned ComfyUI in a benchmark child process with the full-size fixtures in its model folders."""
from __future__ import annotations

import tempfile
from pathlib import Path

FULL_NAMES = {
    "single_file": ("checkpoints", "lune_full_single.safetensors"),
    "diffusers": ("diffusion_models", "lune_full_diffusers"),
    "training_state": ("diffusion_models", "lune_full_train.pt"),
    "bare_diffusers": ("diffusion_models", "lune_full_bare.safetensors"),
}


def full_fixture():
    from testbed.fixtures.sd15_files import build_sd15_fixtures

    return build_sd15_fixtures(None, size="full", seed=0)


def boot_with_full_models():
    """(InProcessComfy, {format: model_name}) — ComfyUI booted with the pack, fixtures symlinked into models/."""
    from testbed.env import make_base_dir, place_model
    from testbed.inprocess import InProcessComfy, configure_args

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-bench-")))
    configure_args(base)
    fx = full_fixture()
    sources = {"single_file": fx.single_file, "diffusers": fx.diffusers_dir, "training_state": fx.training_state,
               "bare_diffusers": fx.bare_unet}
    names = {}
    for fmt, (folder, name) in FULL_NAMES.items():
        names[fmt] = place_model(base, folder, sources[fmt], name)
    names["diffusers"] += "/unet/diffusion_pytorch_model.safetensors"
    return InProcessComfy(base), names
