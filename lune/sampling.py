"""The author's flow Euler sampler, in the k-diffusion calling convention (no ComfyUI).

``model(x, σ·s_in, **extra_args)`` returns the denoised estimate x̂0 (that is what k-diffusion and ComfyUI's
KSAMPLER pass in). For rectified flow with velocity prediction (sd15-flow-lune model card):

    x_σ = σ·ε + (1 − σ)·x0,   v = ε − x0,   x̂0 = x_σ − σ·v   ⇒   v = (x_σ − x̂0) / σ
    Euler step:  x ← x + (σ_{i+1} − σ_i)·v                       (author's generate.py)

On the last step σ_{i+1} = 0 this lands exactly on x̂0. For an EPS/v-prediction model in k-diffusion's
σ-space the same update ``x + (σ' − σ)·(x − x̂0)/σ`` is the classic Euler ODE step, so one function serves
both Lune (flow) and Sol (discrete v-prediction).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def sample_lune_euler(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None,
                      disable=None, **ignored_options) -> torch.Tensor:
    """Deterministic Euler ODE sampler over ``sigmas`` (N + 1 values, descending): one model call per step.

    Extra keyword arguments are accepted and ignored, as k-diffusion's samplers accept the options they do not use:
    wrappers forward ``s_churn``/``s_tmin``/``s_tmax``/``s_noise``/``eta``/``noise_sampler`` to every sampler, and
    the author's sampler adds no noise (churn would make it a different, stochastic sampler).
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
        else:
            velocity = (x - denoised) / sigma
            x = x + (sigma_next - sigma) * velocity
    return x
