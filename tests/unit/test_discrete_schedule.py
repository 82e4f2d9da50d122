"""lune.discrete_schedule against an independent float64 reference written here with Python floats and math
(no torch ops shared with the library): betas → ᾱ → σ, the ZTSNR rescale of Lin et al. 2023 (arXiv 2305.08891,
Algorithm 1), the finite strictly increasing top, trailing timesteps, and the refusal of bad settings."""
from __future__ import annotations

import math

import pytest
import torch

from comfyui_lune.lune import discrete_schedule as ds
from comfyui_lune.lune.errors import LuneError

T = 1000
RTOL = 1e-12  # float64 vs float64: only summation-order rounding may differ
COMFY_ZTSNR_ALPHA_BAR_T = 4.8973451890853435e-08  # comfy/model_sampling.py rescale_zero_terminal_snr_sigmas
PUBLISHED_SIGMA_MAX = {0.012: 14.61, 0.020: 65.93, 0.024: 138.6}  # scaled_linear from 0.00085, no ZTSNR


def ref_betas(schedule: str, start: float, end: float) -> list[float]:
    if schedule == "scaled_linear":
        a, b = math.sqrt(start), math.sqrt(end)
        return [(a + (b - a) * i / (T - 1)) ** 2 for i in range(T)]
    if schedule == "linear":
        return [start + (end - start) * i / (T - 1) for i in range(T)]
    f = [math.cos(((i / T) + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
    return [min(max(1 - f[i + 1] / f[i], 0.0), 0.999) for i in range(T)]


def ref_alpha_bar(betas: list[float]) -> list[float]:
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return out


def ref_ztsnr(alpha_bar: list[float]) -> list[float]:
    """Algorithm 1 of Lin et al. 2023, literally: shift √ᾱ so the last is 0, scale so the first is unchanged."""
    s = [math.sqrt(a) for a in alpha_bar]
    s0, s_last = s[0], s[-1]
    return [((x - s_last) * s0 / (s0 - s_last)) ** 2 for x in s]


def ref_sigmas(schedule: str, start: float, end: float, ztsnr: bool) -> list[float]:
    ab = ref_alpha_bar(ref_betas(schedule, start, end))
    if ztsnr:
        ab = ref_ztsnr(ab)
    return [math.sqrt((1 - a) / a) if a > 0 else math.inf for a in ab]


def max_rel_err(got: torch.Tensor, ref: list[float]) -> float:
    return max(abs(g - r) / abs(r) for g, r in zip(got.tolist(), ref))


@pytest.mark.parametrize("schedule", ds.BETA_SCHEDULES)
@pytest.mark.parametrize("beta_end", [0.012, 0.020, 0.024])
@pytest.mark.parametrize("ztsnr", [False, True])
def test_table_equals_float64_reference_below_the_top(schedule, beta_end, ztsnr):
    table = ds.discrete_sigmas(schedule, 0.00085, beta_end, ztsnr)
    ref = ref_sigmas(schedule, 0.00085, beta_end, ztsnr)
    assert table.dtype == torch.float64 and table.shape == (T,)
    err = max_rel_err(table[:T - 1], ref[:T - 1])
    print(f"{schedule} {beta_end} ztsnr={ztsnr}: max rel err t ≤ T−2 = {err:.1e}")
    assert err <= RTOL
    if not ztsnr:  # without ZTSNR the top is the formula's own value
        assert max_rel_err(table[-1:], ref[-1:]) <= RTOL


@pytest.mark.parametrize("schedule", ds.BETA_SCHEDULES)
@pytest.mark.parametrize("beta_end", [0.012, 0.020, 0.024, 0.05])
@pytest.mark.parametrize("ztsnr", [False, True])
def test_table_is_finite_and_strictly_increasing_in_float32_too(schedule, beta_end, ztsnr):
    table = ds.discrete_sigmas(schedule, 0.00085, beta_end, ztsnr)
    for t in (table, table.float()):  # ComfyUI stores the table as float32
        assert torch.isfinite(t).all()
        assert (t[1:] > t[:-1]).all()
        assert t.log().isfinite().all()


@pytest.mark.parametrize("beta_end", [0.012, 0.020, 0.024])
def test_ztsnr_top_is_one_more_log_sigma_step_and_above_comfys_constant_trap(beta_end):
    table = ds.discrete_sigmas("scaled_linear", 0.00085, beta_end, True)
    ref = ref_sigmas("scaled_linear", 0.00085, beta_end, True)
    assert math.isinf(ref[-1]), "ZTSNR must make the last ᾱ exactly 0"
    expected_top = math.exp(2 * math.log(ref[-2]) - math.log(ref[-3]))
    assert table[-1].item() == pytest.approx(expected_top, rel=RTOL)
    comfy_top = math.sqrt((1 - COMFY_ZTSNR_ALPHA_BAR_T) / COMFY_ZTSNR_ALPHA_BAR_T)
    if beta_end >= 0.02:  # the trap: a fixed terminal constant sits below the penultimate σ
        assert ref[-2] > comfy_top and table[-1].item() > ref[-2]
    else:  # at the SD1.5 betas our top equals ComfyUI's constant: stock ZTSNR sampling is unchanged
        assert table[-1].item() == pytest.approx(comfy_top, rel=1e-6)


@pytest.mark.parametrize("beta_end", sorted(PUBLISHED_SIGMA_MAX))
def test_sigma_max_without_ztsnr_matches_published_values(beta_end):
    table = ds.discrete_sigmas("scaled_linear", 0.00085, beta_end, False)
    assert table[-1].item() == pytest.approx(PUBLISHED_SIGMA_MAX[beta_end], abs=0.01)
    assert table[0].item() == pytest.approx(0.0292, abs=1e-4)


def test_ztsnr_keeps_first_level_and_is_affine_in_sqrt_alpha_bar():
    ab = ds.alphas_cumprod(ds.make_betas("scaled_linear", 0.00085, 0.024))
    rescaled = ds.rescale_zero_terminal_snr(ab)
    assert rescaled[0].item() == pytest.approx(ab[0].item(), rel=RTOL) and rescaled[-1].item() == 0.0
    s, r = ab.sqrt(), rescaled.sqrt()
    slope = (r[1:] - r[:-1]) / (s[1:] - s[:-1])
    assert torch.allclose(slope, slope[0].expand_as(slope), rtol=1e-9)


def test_names_map_to_comfy_make_beta_schedule_shapes():
    assert ds.COMFY_NAMES == {"scaled_linear": "linear", "linear": "sqrt_linear", "cosine": "cosine"}
    sl = ds.make_betas("scaled_linear", 0.00085, 0.012)
    lin = ds.make_betas("linear", 0.00085, 0.012)
    assert sl[0].item() == pytest.approx(0.00085) and sl[-1].item() == pytest.approx(0.012)
    assert lin[0].item() == pytest.approx(0.00085) and lin[-1].item() == pytest.approx(0.012)
    assert sl[T // 2] < lin[T // 2], "scaled_linear is convex (square of a line), linear is a line"


@pytest.mark.parametrize("steps", [1, 4, 8, 20, 25, 50])
def test_trailing_sigmas_are_the_simple_scheduler_grid(steps):
    table = ds.discrete_sigmas("scaled_linear", 0.00085, 0.024, True)
    got = ds.trailing_sigmas(table, steps)
    ts = [round(T - i * T / steps) - 1 for i in range(steps)]  # Lin et al. 2023, section 3.3
    assert got.tolist() == [table[t].item() for t in ts] + [0.0]
    assert got[0].item() == table[-1].item(), "trailing spacing starts at the top (pure noise under ZTSNR)"
    if T % steps == 0:  # ComfyUI simple_scheduler: sigmas[-(1 + int(i · T/N))]
        assert got[:-1].tolist() == [table[-(1 + int(i * T / steps))].item() for i in range(steps)]


@pytest.mark.parametrize("start, end, words", [
    (0.00085, 0.00085, "must be larger than beta_start"),
    (0.012, 0.00085, "did you swap"),
    (0.00085, 0.06, "above 0.05"),
    (0.0, 0.012, "positive"),
    (-0.001, 0.012, "positive"),
    (float("nan"), 0.012, "positive"),
    (0.00085, float("inf"), "positive"),
])
def test_out_of_range_betas_are_refused_with_the_fix(start, end, words):
    with pytest.raises(LuneError, match=words) as info:
        ds.discrete_sigmas("scaled_linear", start, end, True)
    assert "0.00085" in str(info.value) or "model card" in str(info.value)


def test_unknown_schedule_is_refused():
    with pytest.raises(LuneError, match="scaled_linear"):
        ds.discrete_sigmas("squaredcos", 0.00085, 0.012)
