"""The latent checks every Lune sampling path and Lune Latent Multiply run (lune/latent.py)."""
from __future__ import annotations

import torch

from comfyui_lune.lune.latent import nonfinite_problem, sd15_latent_problem


def test_sd15_latent_passes():
    assert sd15_latent_problem(torch.zeros(2, 4, 8, 8)) is None
    assert nonfinite_problem(torch.randn(2, 4, 8, 8)) is None


def test_foreign_latents_are_named_with_the_fix():
    flux = sd15_latent_problem(torch.zeros(1, 16, 8, 8))
    assert "has 16 (Flux/SD3)" in flux and "EmptyLatentImage" in flux
    assert "use Lune Latent Hand-off to convert it" in flux
    video = sd15_latent_problem(torch.zeros(1, 16, 3, 8, 8))
    assert "5-D latent" in video and "(video)" in video and "EmptyLatentImage" in video
    odd = sd15_latent_problem(torch.zeros(1, 7, 8, 8))
    assert "has 7, shape [1, 7, 8, 8]" in odd


def test_nonfinite_counts():
    x = torch.zeros(1, 4, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 2, 0, 0] = float("-inf")
    msg = nonfinite_problem(x)
    assert "1 NaN, 2 Inf of 16" in msg and "Re-sample" in msg
