"""Sampling correctness of the flow patch, the pack's sampler/schedule, and Sol, against plain torch."""
from __future__ import annotations

import math

import pytest
import torch

from tests.numerics import RTOL_FORMULA, RTOL_FP32, assert_close_rel

pytestmark = pytest.mark.comfy

STEPS, CFG, SEED, SHIFT = 8, 7.5, 1234, 2.0


@pytest.fixture(scope="module")
def loaded(comfy, tiny_models):
    """(MODEL, CLIP, VAE) of the single-file fixture, loaded as lune-flux through the pack's loader node."""
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]()
    return loader.load(tiny_models["single_file"], "lune-flux", SHIFT, "(from model file)")


@pytest.fixture(scope="module")
def conds(comfy, loaded):
    enc = comfy.nodes.CLIPTextEncode()
    clip = loaded[1]
    return enc.encode(clip, "a lighthouse at dusk")[0], enc.encode(clip, "")[0]


class UnetSpy:
    """Forward pre-hook on the UNet recording the timesteps it is called with."""

    def __init__(self, model):
        self.calls: list[torch.Tensor] = []
        self.handle = model.model.diffusion_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = kwargs.get("timesteps", args[1] if len(args) > 1 else None)
        self.calls.append(t.detach().clone())

    def close(self):
        self.handle.remove()


def _latent(b=1, size=64):
    return {"samples": torch.zeros(b, 4, size // 8, size // 8)}


def _ksample(comfy, model, pos, neg, sampler, scheduler, steps=STEPS):
    return comfy.nodes.common_ksampler(model, SEED, steps, CFG, sampler, scheduler, pos, neg, _latent())[0]["samples"]


def test_flow_patch_is_const_not_eps_with_sigma_max_1(loaded):
    import comfy.model_sampling as ms

    sampling = loaded[0].get_model_object("model_sampling")
    assert isinstance(sampling, ms.CONST) and not isinstance(sampling, ms.EPS)
    assert isinstance(sampling, ms.ModelSamplingDiscreteFlow)
    assert float(sampling.sigma_max) == 1.0 and sampling.shift == SHIFT and sampling.multiplier == 1000
    assert torch.is_tensor(sampling.sigma_max) and torch.is_tensor(sampling.sigmas)
    # RES4LYF deep-copies the sampling object and calls set_parameters(shift=...)
    import copy

    clone = copy.deepcopy(sampling)
    clone.set_parameters(shift=3.0)
    assert clone.shift == 3.0 and sampling.shift == SHIFT


def test_unet_gets_float_t_equal_1000_sigma_and_same_calls_as_stock_sd3(comfy, loaded, conds):
    pos, neg = conds
    model = loaded[0]
    spy = UnetSpy(model)
    try:
        _ksample(comfy, model, pos, neg, "lune_euler", "lune_flow")
        pack_calls = list(spy.calls)
        spy.calls.clear()
        stock_cls = comfy.nodes.NODE_CLASS_MAPPINGS["ModelSamplingSD3"]
        stock = stock_cls().patch(model, SHIFT)[0]
        _ksample(comfy, stock, pos, neg, "euler", "simple")
        stock_calls = list(spy.calls)
    finally:
        spy.close()
    assert len(pack_calls) == len(stock_calls) == STEPS  # cond+uncond batched: one UNet call per step
    expected = [1000 * 2 * t / (1 + t) for t in (1 - i / STEPS for i in range(STEPS))]  # float64
    seen = torch.stack([c[0] for c in pack_calls])
    assert seen.dtype == torch.float32
    assert_close_rel(seen, expected, RTOL_FORMULA, what="UNet t vs 1000·shift(1 − i/N)")
    assert any(abs(v - round(v)) > 1e-3 for v in seen.tolist()), "t must not be quantised to integers"


def _plain_unet(loaded):
    """The fixture's UNet as a bare torch module (ComfyUI's network class, fp32, no patcher/sampler code)."""
    return loaded[0].model.diffusion_model


def _plain_flow_euler(unet, cond, uncond, shape, steps, shift, cfg, seed):
    """Author's loop (generate.py), written independently: σ_i = shift(1 − i/N); x += (σ_{i+1} − σ_i)·v."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    grid = [shift * t / (1 + (shift - 1) * t) for t in [1 - i / steps for i in range(steps + 1)]]
    for i in range(steps):
        t = torch.full((shape[0] * 2,), 1000.0 * grid[i])
        v_both = unet(torch.cat([x, x]), t, context=torch.cat([cond, uncond]))
        v_c, v_u = v_both.chunk(2)
        v = v_u + cfg * (v_c - v_u)
        x = x + (grid[i + 1] - grid[i]) * v
    return x / 0.18215  # ComfyUI hands out latents divided by SD1.5's scale factor


@torch.no_grad()
def test_parity_with_plain_torch_author_euler(comfy, loaded, conds):
    pos, neg = conds
    out = _ksample(comfy, loaded[0], pos, neg, "lune_euler", "lune_flow")
    ref = _plain_flow_euler(_plain_unet(loaded), pos[0][0], neg[0][0], (1, 4, 8, 8), STEPS, SHIFT, CFG, SEED)
    assert_close_rel(out, ref, RTOL_FP32, what="flow parity |ComfyUI − plain torch|")


@torch.no_grad()
def test_adapter_sigmas_match_author_grid_and_end_at_zero(comfy, loaded):
    sampler, sigmas = comfy.nodes.NODE_CLASS_MAPPINGS["LuneSamplerAdapter"]().build(loaded[0], STEPS, 1.0)
    grid = [SHIFT * t / (1 + (SHIFT - 1) * t) for t in (1 - i / STEPS for i in range(STEPS + 1))]  # float64
    assert sigmas[-1].item() == 0.0 and sigmas[0].item() == 1.0
    assert_close_rel(sigmas, grid, RTOL_FORMULA, what="adapter σ grid")
    assert sampler.sampler_function.__name__ == "sample_lune_euler"


def _plain_sol_euler(unet, cond, uncond, shape, steps, cfg, seed):
    """Sol reference: v-prediction, SD1.5 scaled_linear betas, trailing grid, x_T = σ_max·ε, Euler."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    sig_table = ((1 - abar) / abar).sqrt()
    ts = [int(round(1000 - i * 1000 / steps)) - 1 for i in range(steps)]
    sig = [float(sig_table[t]) for t in ts] + [0.0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * sig[0]
    for i, t in enumerate(ts):
        s = sig[i]
        c_in = 1 / math.sqrt(s * s + 1)
        out = unet(torch.cat([x, x]) * c_in, torch.full((shape[0] * 2,), float(t)),
                   context=torch.cat([cond, uncond]))
        v_c, v_u = out.chunk(2)
        v = v_u + cfg * (v_c - v_u)
        x0 = x / (s * s + 1) - v * s / math.sqrt(s * s + 1)
        x = x + (sig[i + 1] - s) * (x - x0) / s
    return x / 0.18215


@torch.no_grad()
def test_sol_parity_with_plain_torch_discrete_v_loop(comfy, tiny_models, loaded, conds):
    pos, neg = conds
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]()
    sol = loader.load(tiny_models["single_file"], "sol", SHIFT, "(from model file)")[0]
    out = _ksample(comfy, sol, pos, neg, "lune_euler", "lune_flow")
    ref = _plain_sol_euler(_plain_unet(loaded), pos[0][0], neg[0][0], (1, 4, 8, 8), STEPS, CFG, SEED)
    assert_close_rel(out, ref, RTOL_FP32, what="sol parity |ComfyUI − plain torch|")


def test_unet_weights_bitwise_identical_across_formats(comfy, tiny_models):
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]()
    companion = tiny_models["single_file"]
    states = {}
    for fmt, name in tiny_models.items():
        model = loader.load(name, "lune-flux", SHIFT, "(from model file)" if fmt == "single_file" else companion)[0]
        states[fmt] = model.model.diffusion_model.state_dict()
    ref = states.pop("single_file")
    for fmt, sd in states.items():
        assert sd.keys() == ref.keys(), fmt
        for k in ref:
            assert torch.equal(sd[k], ref[k]), f"{fmt}: {k} differs"
