"""The author's Euler on the author's σ grid, as SAMPLER + SIGMAS and in the stock KSampler lists."""
from __future__ import annotations

from ..lune.errors import LuneError
from ..lune.sampling import sample_lune_euler
from ..lune.schedule import flow_sigmas, sol_sigmas
from .comfy_internals import (KSAMPLER, KSAMPLER_NAMES, SAMPLER_NAMES, SCHEDULER_HANDLERS, SCHEDULER_NAMES,
                             KSampler, SchedulerHandler, k_diffusion_sampling)
from .sampling_patches import SolSampling, describe_sampling, is_flow


SAMPLER_NAME = "lune_euler"
SCHEDULER_NAME = "lune_flow"
NOT_FLOW = ("needs a Lune model: load it with Load Lune Model, or put Lune Flow Shift between the checkpoint "
            "loader and the sampler (it replaces any earlier sampling patch)")


def lune_sigmas(model_sampling, steps: int, denoise: float = 1.0, caller: str = f"The {SCHEDULER_NAME} schedule"):
    """Flow: ``shift(linspace(1, 0, N+1))`` with the shift read from the model; Sol: trailing discrete grid."""
    if isinstance(model_sampling, SolSampling):
        return sol_sigmas(steps, denoise)
    if is_flow(model_sampling):
        return flow_sigmas(steps, float(model_sampling.shift), denoise)
    raise LuneError(f"{caller} {NOT_FLOW}. This MODEL carries {describe_sampling(model_sampling)}.")


def _scheduler_handler(model_sampling, steps):
    return lune_sigmas(model_sampling, steps)


def register_in_stock_lists() -> None:
    """Add ``lune_euler`` / ``lune_flow`` to every stock sampler/scheduler list (idempotent)."""
    setattr(k_diffusion_sampling, f"sample_{SAMPLER_NAME}", sample_lune_euler)
    for names in (KSAMPLER_NAMES, SAMPLER_NAMES, KSampler.SAMPLERS):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)
    SCHEDULER_HANDLERS[SCHEDULER_NAME] = SchedulerHandler(_scheduler_handler)
    for names in (SCHEDULER_NAMES, KSampler.SCHEDULERS):
        if SCHEDULER_NAME not in names:
            names.append(SCHEDULER_NAME)


class LuneSamplerAdapter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Lune model (Load Lune Model or Lune Flow Shift); its shift is read."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 1000, "tooltip": "Author: 20–30, 25 typical."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1 for img2img: the last steps of a longer grid, as KSampler "
                                             "does (Sol: at most its 1000 timesteps)."}),
        }}

    RETURN_TYPES = ("SAMPLER", "SIGMAS")
    FUNCTION = "build"
    CATEGORY = "Lune"
    DESCRIPTION = ("The author's Euler ODE on σ_i = shift(1 − i/N), ending exactly at σ = 0 — for SamplerCustom, "
                   "SamplerCustomAdvanced and RES4LYF's SharkSampler.")

    def build(self, model, steps, denoise):
        sigmas = lune_sigmas(model.get_model_object("model_sampling"), steps, denoise, caller="Lune Sampler Adapter")
        return (KSAMPLER(sample_lune_euler), sigmas)
