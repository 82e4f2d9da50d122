"""Flow/Sol σ grids and the Euler sampler, checked against independent formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_lune.lune import schedule
from comfyui_lune.lune.sampling import sample_lune_euler
from tests.numerics import RTOL_FORMULA, assert_close_rel


def test_flow_shift_matches_sd3_formula_and_fixes_endpoints():
    s = torch.linspace(0, 1, 11)
    for shift in (1.0, 2.0, 2.5, 6.0):
        expected = shift * s / (1 + (shift - 1) * s)
        assert torch.allclose(schedule.flow_shift(s, shift), expected)
    assert schedule.flow_shift(torch.tensor(0.0), 2.0) == 0 and schedule.flow_shift(torch.tensor(1.0), 2.0) == 1
    with pytest.raises(ValueError):
        schedule.flow_shift(s, 0.0)


def test_flow_sigmas_is_authors_grid_ending_at_zero():
    sig = schedule.flow_sigmas(8, 2.0)
    assert sig.shape == (9,) and sig[0] == 1.0 and sig[-1] == 0.0
    assert sig[-2].item() == pytest.approx(2 * (1 / 8) / (1 + 1 / 8), abs=1e-7)  # 0.222 at N=8
    assert torch.all(sig[1:] < sig[:-1])


def test_flow_sigmas_equals_diffusers_flux_convention():
    """diffusers FlowMatchEuler with sigmas=linspace(1, 1/N, N), shift s: σ = s·σ/(1+(s−1)σ), then a trailing 0."""
    n, s = 25, 2.5
    base = np.linspace(1.0, 1.0 / n, n)
    diffusers_like = np.append(s * base / (1 + (s - 1) * base), 0.0)
    assert np.allclose(schedule.flow_sigmas(n, s).numpy(), diffusers_like, atol=1e-6)


def test_flow_sigmas_denoise_takes_tail_of_longer_grid():
    full = schedule.flow_sigmas(20, 2.0)
    part = schedule.flow_sigmas(10, 2.0, denoise=0.5)
    assert torch.allclose(part, full[-11:])


def _sd15_sigmas_float64() -> np.ndarray:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return np.sqrt((1 - alphas_cumprod) / alphas_cumprod)


def test_sd15_discrete_sigmas_match_known_values():
    sig = schedule.sd15_discrete_sigmas()
    assert_close_rel(sig, _sd15_sigmas_float64(), RTOL_FORMULA, what="SD1.5 σ table vs float64")
    assert sig[-1].item() == pytest.approx(14.6146, rel=1e-5)  # σ_max of SD1.5, quoted to 4 decimals
    assert sig[0].item() == pytest.approx(0.0292, rel=2e-3)  # σ_min, quoted to 3 significant figures


def test_trailing_timesteps_and_sol_grid():
    assert schedule.trailing_timesteps(20)[:3].tolist() == [999, 949, 899]
    assert schedule.trailing_timesteps(20)[-1].item() == 49
    sig = schedule.sol_sigmas(20)
    assert sig.shape == (21,) and sig[-1] == 0 and sig[0].item() == pytest.approx(14.6146, rel=1e-5)


def test_sol_label_shift():
    t = torch.tensor([999, 500, 0])
    assert torch.equal(schedule.sol_timestep_label(t, 0.0), t)
    shifted = schedule.sol_timestep_label(t, 3.0)
    assert shifted.tolist() == [int(np.floor(999 * 3 * x / (1 + 2 * x))) for x in (1.0, 500 / 999, 0.0)]


def test_euler_sampler_is_exact_on_linear_flow():
    """For a model that knows x0, the flow ODE is a straight line: Euler lands on x0 from any grid."""
    x0 = torch.randn(2, 4, 3, 3)

    def model(x, sigma, **kw):
        return x0

    noise = torch.randn_like(x0)
    out = sample_lune_euler(model, noise, schedule.flow_sigmas(5, 2.0))
    assert_close_rel(out, x0, RTOL_FORMULA, what="Euler on a straight flow")


def test_euler_sampler_matches_velocity_update_and_calls_once_per_step():
    calls = []

    def model(x, sigma, **kw):
        calls.append(sigma.clone())
        return 0.5 * x  # arbitrary denoiser

    x = torch.ones(1, 1, 1, 1)
    sig = schedule.flow_sigmas(4, 2.0)
    out = sample_lune_euler(model, x.clone(), sig)
    ref = x.clone()
    for i in range(4):
        v = (ref - 0.5 * ref) / sig[i]
        ref = ref + (sig[i + 1] - sig[i]) * v
    assert len(calls) == 4
    assert_close_rel(out, ref, RTOL_FORMULA, what="Euler velocity update")


def test_euler_sampler_accepts_and_ignores_k_diffusion_options():
    """Wrappers forward s_churn/s_noise/… to every sampler (k-diffusion samplers take them); the author's Euler is
    deterministic and ignores them: same result, no TypeError."""
    x0 = torch.randn(1, 4, 3, 3)

    def model(x, sigma, **kw):
        return 0.5 * x + 0.5 * x0

    noise = torch.randn_like(x0)
    sig = schedule.flow_sigmas(4, 2.0)
    plain = sample_lune_euler(model, noise.clone(), sig)
    with_options = sample_lune_euler(model, noise.clone(), sig, extra_args={}, callback=None, disable=True,
                                     s_churn=0.5, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.003, eta=1.0,
                                     noise_sampler=None)
    assert torch.equal(plain, with_options)


def test_sol_small_denoise_uses_the_whole_1000_step_grid():
    """20 steps at denoise 0.01 ask for 2000 steps; Sol has 1000 timesteps: the tail of the 1000-step grid."""
    table = schedule.sd15_discrete_sigmas()
    sig = schedule.sol_sigmas(20, denoise=0.01)
    assert sig.shape == (21,) and sig[-1] == 0
    assert torch.equal(sig[:-1], table[torch.arange(19, -1, -1)])  # timesteps 19 … 0
    # what KSampler does: ask the scheduler for int(steps / denoise) steps, keep the last steps + 1
    assert torch.equal(schedule.sol_sigmas(2000)[-21:], sig)
    assert schedule.sol_sigmas(1500).shape == (1001,)
    assert torch.equal(schedule.sol_sigmas(10, denoise=0.5), schedule.sol_sigmas(20)[-11:])  # ordinary img2img
