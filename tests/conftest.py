"""Shared test fixtures: one real ComfyUI per test session (in-process), fixture models, an HTTP server on demand.

The ComfyUI base directory is created in ``pytest_configure`` — before any test module imports comfy — so that
``folder_paths`` binds to it and never to the user's own install.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# ComfyUI's repository has a top-level ``tests`` package of its own, and the in-process ComfyUI puts its root first
# on sys.path (pytest_configure below). Import this repository's ``tests`` first, so ``tests.numerics`` and
# ``tests.*`` helpers keep resolving here for every test module collected after that.
import tests.numerics  # noqa: F401
from testbed.env import make_base_dir, place_model

_BASE: Path | None = None


def pytest_configure(config):
    global _BASE
    _BASE = make_base_dir(Path(tempfile.mkdtemp(prefix="lune-comfy-base-")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
    try:
        from testbed.inprocess import configure_args

        configure_args(_BASE)
    except RuntimeError:
        pass  # no ComfyUI provisioned: library unit tests still run, ComfyUI tests fail with the reason


def pytest_report_header(config):
    """Which ComfyUI (and frontend, torch, RES4LYF) this run tests: the test matrix runs the suites once per version."""
    from importlib.metadata import PackageNotFoundError, version

    from testbed.env import comfyui_dir, comfyui_version, res4lyf_path, res4lyf_skip_reason

    def _dist(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    res4lyf = res4lyf_path()
    return [f"ComfyUI {comfyui_version()} at {comfyui_dir()} (frontend {_dist('comfyui-frontend-package')}, "
            f"torch {_dist('torch')})",
            f"RES4LYF: {res4lyf if res4lyf else res4lyf_skip_reason()}"]


def pytest_collection_modifyitems(config, items):
    """A ComfyUI version that .ci/provision.sh could not provision (no source for it) skips, with its reason."""
    reason = os.environ.get("LUNE_COMFYUI_UNAVAILABLE")
    if reason:
        version = os.environ.get("LUNE_COMFYUI_VERSION", "this version")
        for item in items:
            item.add_marker(pytest.mark.skip(reason=f"ComfyUI {version} not provisioned: {reason}"))


def pytest_unconfigure(config):
    if _BASE is not None:
        shutil.rmtree(_BASE, ignore_errors=True)


@pytest.fixture(scope="session")
def comfy_base() -> Path:
    return _BASE


@pytest.fixture(autouse=True)
def _links_into_tmp_path_go_with_it(request):
    """Links a test placed in models/ pointing into its own tmp_path are removed after it: pytest deletes a passed
    test's tmp_path (tmp_path_retention_policy), and ComfyUI's cached file list fails on a folder that vanished
    (``os.path.getmtime`` in ``folder_paths.cached_filename_list_``) until the models folder itself changes."""
    own = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else None
    yield  # (tmp_path, set up before this point, is torn down after it)
    if _BASE is None or own is None:
        return
    for folder, dirs, files in os.walk(_BASE / "models"):  # os.walk does not descend into linked folders
        for link in (os.path.join(folder, name) for name in dirs + files):
            if os.path.islink(link) and os.path.commonpath([own, os.readlink(link)]) == own:
                os.unlink(link)


@pytest.fixture(scope="session")
def comfy(comfy_base):
    """The in-process ComfyUI with the pack loaded (booted once)."""
    from testbed.inprocess import InProcessComfy

    return InProcessComfy._booted or InProcessComfy(comfy_base)


@pytest.fixture(scope="session")
def tiny_sd15():
    from testbed.fixtures.sd15_files import build_sd15_fixtures

    return build_sd15_fixtures(None, size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_models(comfy, comfy_base, tiny_sd15):
    """The tiny fixture in all four formats, placed in the ComfyUI model folders; maps format → model_name."""
    f = tiny_sd15
    names = {
        "single_file": place_model(comfy_base, "checkpoints", f.single_file, "lune_tiny_single.safetensors"),
        "diffusers": place_model(comfy_base, "diffusion_models", f.diffusers_dir, "lune_tiny_diffusers")
        + "/unet/diffusion_pytorch_model.safetensors",
        "training_state": place_model(comfy_base, "diffusion_models", f.training_state, "lune_tiny_train.pt"),
        "bare_diffusers": place_model(comfy_base, "diffusion_models", f.bare_unet, "lune_tiny_bare.safetensors"),
    }
    return names


@pytest.fixture(scope="session")
def comfy_server(comfy_base, tiny_models):
    """A real ComfyUI HTTP server on 127.0.0.1 (free port) over the same base directory and fixture models."""
    from testbed.server import ComfyServer

    server = ComfyServer(comfy_base)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
