"""Noise schedules of the Lune family, as plain torch functions (no ComfyUI).

Flow variants (lune, lune-flux) — rectified flow (model cards; AbstractEyes/sd15-flow-trainer):
    forward process   x_σ = σ·ε + (1 − σ)·x0          σ ∈ [0, 1], σ = 1 is pure noise
    shift (SD3 form)  σ' = s·σ / (1 + (s − 1)·σ)      == ComfyUI ``time_snr_shift(s, σ)``
    author's grid     σ_i = shift(1 − i/N), i = 0..N  (ends exactly at σ = 0)
This equals diffusers ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=linspace(1, 1/N, N))``
with ``shift=s`` (a trailing 0 appended), which is what the author's generate.py samples on.

Sol (sd15-flow-matching) — v-prediction on the SD1.5 discrete DDPM schedule (its sampling code):
    β_t = (linspace(√0.00085, √0.012, 1000))²,  ᾱ_t = Π(1 − β),  σ_t = √((1 − ᾱ_t)/ᾱ_t)
    "trailing" timesteps t_i = round(1000 − i·1000/N) − 1, i = 0..N−1, then σ = 0
    label shift       t_label = floor(999 · shift(t/999))   (shift ≤ 0 or == 1: no relabelling)
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("lune")

SD15_TRAIN_TIMESTEPS = 1000
SD15_BETA_START = 0.00085
SD15_BETA_END = 0.012


def flow_shift(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """SD3 time shift ``σ' = s·σ / (1 + (s − 1)·σ)``; identity at s = 1. Maps 0→0 and 1→1."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0 (got {shift}); Lune was trained at 2.0-2.5")
    if shift == 1.0:
        return sigma
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """The author's Euler grid ``σ_i = shift(1 − i/N)``: N + 1 values from 1 down to exactly 0 (float32).

    With ``denoise < 1`` (img2img) the grid is computed for ``round(N / denoise)`` steps and its last N + 1
    values are kept — the same convention as ComfyUI's KSampler, so both paths agree.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1] (got {denoise})")
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    t = torch.linspace(1.0, 0.0, total + 1, dtype=torch.float64)
    return flow_shift(t, shift)[-(steps + 1):].to(torch.float32)


def sd15_discrete_sigmas(timesteps: int = SD15_TRAIN_TIMESTEPS) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) of SD1.5's "scaled_linear" betas (0.00085 → 0.012), index t = 0..999, float32."""
    betas = torch.linspace(SD15_BETA_START ** 0.5, SD15_BETA_END ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().to(torch.float32)


def trailing_timesteps(steps: int, timesteps: int = SD15_TRAIN_TIMESTEPS) -> torch.Tensor:
    """diffusers "trailing" spacing: ``round(arange(T, 0, −T/N)) − 1`` (e.g. N=20 → 999, 949, …, 49)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in 1..{timesteps} (got {steps})")
    ratio = timesteps / steps
    ts = torch.round(torch.arange(timesteps, 0, -ratio, dtype=torch.float64)) - 1
    return ts.to(torch.int64)[:steps]


def sol_sigmas(steps: int, denoise: float = 1.0) -> torch.Tensor:
    """Sol's Euler grid: σ at the trailing timesteps, then 0 (N + 1 values, float32). Unshifted, as the author.

    With ``denoise < 1`` the grid is computed for ``int(N / denoise)`` steps and its last N + 1 values are kept
    (ComfyUI's KSampler convention; KSampler itself asks the scheduler for ``int(N / denoise)`` steps). SD1.5's
    discrete schedule has only 1000 timesteps, so a request for more (small denoise, e.g. 20 steps at 0.01 → 2000)
    uses the full 1000-step grid: its last N steps start at timestep N − 1, an effective denoise of N / 1000.
    """
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1] (got {denoise})")
    requested = steps if denoise >= 0.9999 else int(steps / denoise)
    total = min(requested, SD15_TRAIN_TIMESTEPS)
    if total < requested:
        log.info("Sol: a %d-step grid was asked for (steps ÷ denoise), but SD1.5's discrete schedule has %d timesteps; "
                 "using all %d. The last %d steps start at timestep %d (denoise %.3g).", requested,
                 SD15_TRAIN_TIMESTEPS, total, min(steps, total), min(steps, total) - 1,
                 min(steps, total) / SD15_TRAIN_TIMESTEPS)
    table = sd15_discrete_sigmas()
    sig = table[trailing_timesteps(total)]
    return torch.cat([sig, sig.new_zeros(1)])[-(steps + 1):]


def sol_timestep_label(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Sol's shifted UNet timestep label ``floor(999·shift(t/999))``; shift ≤ 0 or 1 returns t unchanged."""
    if shift <= 0 or shift == 1.0:
        return t
    return torch.floor(999.0 * flow_shift(t.double() / 999.0, shift)).to(t.dtype)
