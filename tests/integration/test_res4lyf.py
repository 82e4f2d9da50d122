"""A Lune model sampled by RES4LYF's own sampler (``ClownsharKSampler_Beta``) in a real ComfyUI 0.3.75 server.

RES4LYF is GitHub-only: the tests run when a checkout is available (``RES4LYF_PATH``, commit a91beac for ComfyUI
0.3.75; see ``testbed.env.res4lyf_path``) and skip with that reason otherwise.

What the Lune patch promises, checked on every UNet call RES4LYF makes (a probe node in a throw-away custom node pack
records the σ each call is made at and the timestep the UNet receives):
- every σ of the schedule asked for is evaluated (RES4LYF's multistep start-up and last step add substeps
  between grid points) and nothing outside it: ``lune_flow`` = the author's grid ``σ_i = s·u/(1+(s−1)·u)``,
  ``u = 1 − i/N``;
  ``beta57`` = RES4LYF's beta(0.5, 0.7) quantile schedule over the model's *shifted* flow σ table;
- the UNet gets ``t = 1000·σ`` as a float (rectified flow, not a quantised discrete index).
The grids are computed here from those formulas, independently of the pack's code.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from testbed.env import make_base_dir, place_model, res4lyf_path, res4lyf_skip_reason
from testbed.server import ComfyServer, execution_error

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(res4lyf_path() is None, reason=res4lyf_skip_reason())]

SHIFT = 2.0
STEPS = 6
RTOL = 1e-5  # float32 σ and timesteps against float64 formulas, relative to the value compared

PROBE_PACK = textwrap.dedent('''
    """Test-only probe: records (σ, UNet timestep) of every UNet call into a JSON-lines file."""
    import json


    class LuneTestProbe:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",), "record_to": ("STRING", {"default": ""})}}

        RETURN_TYPES = ("MODEL",)
        FUNCTION = "probe"
        CATEGORY = "testing"

        def probe(self, model, record_to):
            m = model.clone()
            unet = m.model.diffusion_model
            forward = type(unet).forward.__get__(unet)  # the class's: an earlier probe's patch may still be applied
            calls = {}

            def unet_wrapper(apply_model, args):
                calls["sigma"] = args["timestep"].flatten().tolist()
                return apply_model(args["input"], args["timestep"], **args["c"])

            def recording_forward(x, timesteps=None, *a, **kw):
                with open(record_to, "a") as f:
                    f.write(json.dumps({"sigma": calls.get("sigma"), "t": timesteps.flatten().tolist(),
                                        "t_dtype": str(timesteps.dtype)}) + "\\n")
                return forward(x, timesteps, *a, **kw)

            m.set_model_unet_function_wrapper(unet_wrapper)
            m.add_object_patch("diffusion_model.forward", recording_forward)
            return (m,)


    NODE_CLASS_MAPPINGS = {"LuneTestProbe": LuneTestProbe}
''')


@pytest.fixture(scope="module")
def r4_server(tmp_path_factory, tiny_sd15):
    base = make_base_dir(tmp_path_factory.mktemp("res4lyf-comfy-base"), with_res4lyf=True)
    probe = base / "custom_nodes" / "lune_test_probe"
    probe.mkdir()
    (probe / "__init__.py").write_text(PROBE_PACK)
    srv = ComfyServer(base)
    try:
        srv.wait_ready()
        srv.object_info = srv.get("/object_info")
        srv.checkpoint = place_model(base, "checkpoints", tiny_sd15.single_file, "lune_tiny_single.safetensors")
        yield srv
    finally:
        srv.stop()


def clownshark_graph(srv, scheduler: str, record_to: str) -> dict:
    inputs = {"eta": 0.0, "sampler_name": "multistep/res_2m", "scheduler": scheduler, "steps": STEPS,
              "steps_to_run": -1, "denoise": 1.0, "cfg": 1.0, "seed": 7, "sampler_mode": "standard",
              "bongmath": False, "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
              "latent_image": ["5", 0]}
    required = srv.object_info["ClownsharKSampler_Beta"]["input"]["required"]
    assert set(inputs) >= set(required), f"ClownsharKSampler_Beta needs {sorted(set(required) - set(inputs))}"
    return {
        "1": {"class_type": "LuneModelLoader", "inputs": {"model_name": srv.checkpoint, "variant": "lune-flux",
                                                          "shift": SHIFT, "clip_vae_from": "(from model file)"}},
        "2": {"class_type": "LuneTestProbe", "inputs": {"model": ["1", 0], "record_to": record_to}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "ClownsharKSampler_Beta", "inputs": {k: v for k, v in inputs.items() if k in required
                                                                 or k in srv.object_info["ClownsharKSampler_Beta"][
                                                                     "input"].get("optional", {})}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"r4_{scheduler}"}},
    }


def run_and_record(srv, scheduler: str, tmp_path) -> list[dict]:
    record = tmp_path / f"calls_{scheduler}.jsonl"
    entry = srv.run(clownshark_graph(srv, scheduler, str(record)), timeout=600)
    assert "rejected" not in entry, entry.get("rejected")
    error = execution_error(entry) or {}
    assert entry["status"]["status_str"] == "success", (f"{error.get('exception_type')}: "
                                                        f"{error.get('exception_message')}")
    return [json.loads(line) for line in record.read_text().splitlines()]


def shifted(u: np.ndarray, s: float = SHIFT) -> np.ndarray:
    return s * u / (1 + (s - 1) * u)


def author_grid(steps: int) -> np.ndarray:
    """The σ the author's Euler evaluates the model at: shift(1 − i/N), i = 0 … N−1 (σ = 0 is never evaluated)."""
    return shifted(1 - np.arange(steps) / steps)


def beta57_grid(steps: int) -> np.ndarray:
    """beta57 = the beta-quantile schedule with α = 0.5, β = 0.7 over the model's 1000-entry σ table
    (flow: σ_t = shift(t/1000), t = 1 … 1000), duplicates removed, evaluated points only (no final 0)."""
    from scipy import stats

    table = shifted(np.arange(1, 1001) / 1000.0)
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    idx = np.rint(stats.beta.ppf(quantiles, 0.5, 0.7) * (len(table) - 1)).astype(int)
    out = []
    for i in idx:
        if not out or table[i] != out[-1]:
            out.append(table[i])
    return np.array(out)


def check_calls(calls: list[dict], expected_grid: np.ndarray, name: str) -> None:
    assert calls, f"{name}: RES4LYF made no UNet call"
    sigmas = np.array([c["sigma"][0] for c in calls])
    timesteps = np.array([c["t"][0] for c in calls])
    for c in calls:
        assert len(set(c["sigma"])) == 1 and len(set(c["t"])) == 1, c
        assert "float" in c["t_dtype"], f"{name}: the UNet got {c['t_dtype']} timesteps (flow needs float)"
    t_err = np.max(np.abs(timesteps - 1000.0 * sigmas) / np.maximum(1000.0 * sigmas, 1e-12))
    print(f"{name}: {len(calls)} UNet calls, σ = {np.round(sigmas, 5).tolist()}; max rel |t − 1000σ| = {t_err:.2e}")
    assert t_err <= RTOL, f"{name}: UNet timesteps are not 1000·σ (max relative error {t_err:.2e})"
    distinct = np.array(sorted(set(sigmas.tolist()), reverse=True))
    # Every grid point is a step RES4LYF evaluates; its multistep start-up and final substeps add evaluations
    # strictly inside grid intervals (σ_{i+1}, σ_i), never outside [0, 1].
    grid_err = max(np.min(np.abs(distinct - g)) / g for g in expected_grid)
    print(f"{name}: max rel |grid σ − nearest evaluated σ| = {grid_err:.2e} (tolerance {RTOL:g})")
    assert grid_err <= RTOL, f"{name}: evaluated σ {distinct.tolist()} miss grid points of {expected_grid.tolist()}"
    extras = [s for s in distinct if np.min(np.abs(expected_grid - s) / expected_grid) > RTOL]
    print(f"{name}: substep evaluations between grid points: {np.round(extras, 5).tolist()}")
    assert all(0 < s < expected_grid[0] for s in extras), f"{name}: σ outside the schedule: {extras}"


def combo_options(spec: list) -> list:
    """A combo input's options from /object_info: ``[[options…], {…}]`` (V1 nodes) or ``["COMBO", {"options":
    [...]}]`` (the newer combo form, e.g. RES4LYF 1.1.0 on ComfyUI 0.28.2)."""
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def test_lune_flow_scheduler_is_offered_to_res4lyf(r4_server):
    schedulers = combo_options(r4_server.object_info["ClownsharKSampler_Beta"]["input"]["required"]["scheduler"])
    assert "lune_flow" in schedulers and "beta57" in schedulers


def test_res4lyf_on_lune_flow_uses_the_authors_grid_and_float_timesteps(r4_server, tmp_path):
    check_calls(run_and_record(r4_server, "lune_flow", tmp_path), author_grid(STEPS), "lune_flow")


def test_res4lyf_on_beta57_samples_the_shifted_flow_table(r4_server, tmp_path):
    check_calls(run_and_record(r4_server, "beta57", tmp_path), beta57_grid(STEPS), "beta57")
