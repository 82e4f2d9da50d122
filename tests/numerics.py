"""The one way the tests compare numbers: error relative to the magnitude compared, printed with its bound.

    max|actual − expected| ≤ rtol · max(max|expected|, floor)

An absolute bound (1e-4) fails on another CPU once values reach |22| (latents): float32 rounding grows with the
magnitude and with the kernels the CPU picks. ``floor`` keeps the bound meaningful when the reference is ~0.
"""
from __future__ import annotations

import torch

# float32 results of two implementations of the same computation (a UNet run through ComfyUI vs plain torch, a
# 1000·σ timestep): measured 1e-6 … 1e-5 of the magnitude on x86 CPUs; 1e-4 leaves 10× headroom and stays ≥ 10×
# below a real mistake (a σ grid off by 1e-3, a wrong input scaling).
RTOL_FP32 = 1e-4
# A float32 result against a float64 (or exact) reference of a short, well-conditioned formula.
RTOL_FORMULA = 1e-6


def max_rel_error(actual, expected, floor: float = 1.0) -> tuple[float, float]:
    """(max |actual − expected|, the magnitude it is measured against)."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    err = (actual - expected).abs().max().item()
    scale = max(expected.abs().max().item(), floor)
    return err, scale


def assert_close_rel(actual, expected, rtol: float = RTOL_FP32, what: str = "values", floor: float = 1.0) -> float:
    """Assert ``max|Δ| ≤ rtol·max(max|expected|, floor)``; prints the measured error and the bound (pytest -s)."""
    err, scale = max_rel_error(actual, expected, floor)
    bound = rtol * scale
    print(f"{what}: max|Δ| = {err:.3e}, bound {bound:.3e} (rtol {rtol:g} × magnitude {scale:.4g}); "
          f"relative {err / scale:.2e}")
    assert err <= bound, f"{what}: max|Δ| = {err:.3e} exceeds {bound:.3e} (rtol {rtol:g} × {scale:.4g})"
    return err
