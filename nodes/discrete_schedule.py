"""Lune Discrete Schedule: MODEL → MODEL sampled with custom betas, v-prediction or eps, and zero terminal SNR.

For models retrained on another discrete schedule than the stock one ComfyUI assumes (SD1.5/SD2/SDXL:
scaled_linear 0.00085 → 0.012, no ZTSNR), e.g. SQCU/sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr (v-prediction,
0.00085 → 0.024, ZTSNR). The σ table comes from ``lune.discrete_schedule``; prediction and table lookup come from
ComfyUI's own ``comfy.model_sampling`` classes, composed as in comfy_extras/nodes_model_advanced.py.
"""
from __future__ import annotations

import logging

from ..lune.discrete_schedule import (BETA_END_DEFAULT, BETA_END_MAX, BETA_SCHEDULES, BETA_START_DEFAULT,
                                      COMFY_NAMES, discrete_sigmas)
from ..lune.errors import LuneError, UnsupportedModelError
from ..lune.schedule import sol_timestep_label
from ..lune.variants import SHIFT_MAX
from .comfy_internals import CONST, EPS, V_PREDICTION, ModelSamplingDiscrete
from .sampling_patches import current_sampling, describe_model

log = logging.getLogger("lune")

PREDICTIONS = ("v_prediction", "eps")
DISCRETE_MODEL_TYPES = ("EPS", "V_PREDICTION")
SQCU_SETTINGS = "v_prediction, scaled_linear, 0.00085 → 0.024, zero_terminal_snr on"


class LuneDiscreteSampling(ModelSamplingDiscrete):
    """ComfyUI's discrete sampling with the σ table set from ``lune.discrete_schedule`` and an optional Sol-style
    timestep-label shift ``t_label = floor(999·shift(t/999))`` (AbstractPhil/sd15-flow-matching's sampler; 0 = off).

    Everything else (σ → t lookup, t → σ interpolation, sigma_min/max, noise scaling, prediction) is ComfyUI's.
    """
    label_shift = 0.0
    beta_schedule = "scaled_linear"

    def set_schedule(self, sigmas, *, beta_schedule: str, beta_start: float, beta_end: float,
                     zero_terminal_snr: bool, label_shift: float = 0.0) -> None:
        self.set_sigmas(sigmas)  # float64 → float32 buffers ``sigmas`` / ``log_sigmas`` (ComfyUI's method)
        self.num_timesteps = len(sigmas)
        self.beta_schedule = beta_schedule
        self.linear_start, self.linear_end = float(beta_start), float(beta_end)
        self.zsnr = bool(zero_terminal_snr)
        self.label_shift = float(label_shift)

    def timestep(self, sigma):
        return sol_timestep_label(super().timestep(sigma), self.label_shift)


class LuneDiscreteV(LuneDiscreteSampling, V_PREDICTION):
    """v-prediction: c_in = 1/√(σ²+1), x̂0 = x/(σ²+1) − v·σ/√(σ²+1) (ComfyUI ``V_PREDICTION``)."""


class LuneDiscreteEps(LuneDiscreteSampling, EPS):
    """ε-prediction: c_in = 1/√(σ²+1), x̂0 = x − σ·ε (ComfyUI ``EPS``)."""


SAMPLING_CLASSES = {"v_prediction": LuneDiscreteV, "eps": LuneDiscreteEps}


def require_discrete(model) -> None:
    """Refuse MODELs whose network was not trained on a discrete schedule (flow, EDM, cascade, continuous-v)."""
    base = model.model
    model_type = getattr(getattr(base, "model_type", None), "name", None)
    if model_type not in DISCRETE_MODEL_TYPES or not hasattr(base, "model_config"):
        raise UnsupportedModelError(
            f"Lune Discrete Schedule works on discrete-schedule models (SD1.5, SD2, SDXL and their finetunes); this "
            f"MODEL is {describe_model(model)} loaded as {model_type or type(base).__name__}, which is sampled another "
            "way (flow/EDM). Connect the model straight to the sampler, or use ComfyUI's ModelSampling* node of "
            "its family (ModelSamplingSD3 / ModelSamplingFlux).")


def loaded_as(model) -> tuple[str, bool]:
    """(prediction, zsnr) the loader gave this MODEL: ComfyUI sets V_PREDICTION when the file carries a ``v_pred``
    key (SDXL, SD2 heuristics) and zsnr when it carries ``ztsnr``."""
    base = model.model
    return base.model_type.name, bool(getattr(base.model_sampling, "zsnr", False))


def report(model, prediction: str, zero_terminal_snr: bool) -> None:
    """Log what the MODEL was loaded as, which earlier patch is replaced, and any disagreement with the settings."""
    loaded_prediction, loaded_zsnr = loaded_as(model)
    log.info("Lune Discrete Schedule: this MODEL (%s) was loaded as %s%s.", describe_model(model), loaded_prediction,
             " with zsnr" if loaded_zsnr else "")
    patched = current_sampling(model)
    if patched is not model.model.model_sampling:
        level = logging.WARNING if isinstance(patched, CONST) else logging.INFO
        log.log(level, "Lune Discrete Schedule: replaces the earlier sampling patch %s%s.", type(patched).__name__,
                " (rectified flow: use this node only if the weights are really discrete-schedule)"
                if level == logging.WARNING else "")
    if loaded_prediction == "V_PREDICTION" and prediction == "eps":
        log.warning("Lune Discrete Schedule: ComfyUI loaded this MODEL as v-prediction (a v_pred key in the file, or "
                    "its SD2 detection) but prediction is set to eps.")
    if loaded_zsnr and not zero_terminal_snr:
        log.warning("Lune Discrete Schedule: the file says zero terminal SNR (ztsnr key) but zero_terminal_snr is off.")


def install_discrete_schedule(model, prediction: str, beta_schedule: str, beta_start: float, beta_end: float,
                              zero_terminal_snr: bool, label_shift: float = 0.0):
    """MODEL → new MODEL with the discrete schedule; replaces any earlier sampling patch, never touches ``model``."""
    if prediction not in SAMPLING_CLASSES:
        raise LuneError(f"prediction must be one of {', '.join(PREDICTIONS)} (got {prediction!r}).")
    if not 0 <= label_shift <= SHIFT_MAX:
        raise LuneError(f"timestep_label_shift must be between 0 and {SHIFT_MAX:g} (got {label_shift}); "
                        "0 = off (every model except Sol experiments).")
    require_discrete(model)
    sigmas = discrete_sigmas(beta_schedule, beta_start, beta_end, zero_terminal_snr)
    sampling = SAMPLING_CLASSES[prediction](model.model.model_config)
    sampling.set_schedule(sigmas, beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end,
                          zero_terminal_snr=zero_terminal_snr, label_shift=label_shift)
    m = model.clone()
    m.add_object_patch("model_sampling", sampling)
    return m


class LuneDiscreteSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5, SD2 or SDXL model from any loader (Load Checkpoint, "
                                           "Load Diffusion Model, Load Lune Model)."}),
            "prediction": (list(PREDICTIONS), {"default": "v_prediction", "tooltip": (
                "What the UNet outputs: v_prediction (v-pred finetunes, SD2-768, Sol) or eps (stock SD1.5/SDXL). "
                f"SQCU vpred_sqcusnr SDXL: {SQCU_SETTINGS}.")}),
            "beta_schedule": (list(BETA_SCHEDULES), {"default": "scaled_linear", "tooltip": (
                "diffusers names. scaled_linear = β from a linspace of √β (SD1.5/SD2/SDXL; ComfyUI calls it "
                "'linear'); linear = β from a linspace of β (ComfyUI 'sqrt_linear'); cosine = Nichol & Dhariwal "
                "(ignores beta_start/beta_end).")}),
            "beta_start": ("FLOAT", {"default": BETA_START_DEFAULT, "min": 0.00001, "max": BETA_END_MAX,
                                     "step": 0.00001, "round": 0.00001, "tooltip": (
                "β at t = 0 (model card / scheduler_config.json). 0.00085 for SD1.5, SD2, SDXL and SQCU.")}),
            "beta_end": ("FLOAT", {"default": BETA_END_DEFAULT, "min": 0.00001, "max": BETA_END_MAX,
                                   "step": 0.00001, "round": 0.00001, "tooltip": (
                "β at the last timestep. 0.012 stock; 0.024 for SQCU vpred_sqcusnr SDXL. Must be > beta_start.")}),
            "zero_terminal_snr": ("BOOLEAN", {"default": False, "tooltip": (
                "Rescale the schedule so the last step is pure noise (Lin et al. 2023). Only for models TRAINED "
                "that way (SQCU: on): forcing it on other v-pred models burns the images. The top σ is finite "
                "(one more step of the table's log-σ spacing) so samplers start at the right timestep.")}),
        }, "optional": {
            "timestep_label_shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": SHIFT_MAX, "step": 0.5,
                                               "tooltip": (
                "Sol's experimental shift of the timestep LABEL given to the UNet, t' = floor(999·shift(t/999)); σ "
                "values stay unshifted. 0 = off (the author's default and every other model); he tried 3, 6, 9.")}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "Lune"
    DESCRIPTION = ("Sets a discrete noise schedule on an SD1.5/SD2/SDXL model: custom betas, v-prediction or eps, "
                   "zero terminal SNR. For models retrained on such a schedule, e.g. SQCU's vpred_sqcusnr SDXL "
                   f"({SQCU_SETTINGS}). Replaces any earlier sampling patch; use the simple or normal scheduler.")

    def patch(self, model, prediction, beta_schedule, beta_start, beta_end, zero_terminal_snr,
              timestep_label_shift=0.0):
        patched = install_discrete_schedule(model, prediction, beta_schedule, beta_start, beta_end,
                                            zero_terminal_snr, timestep_label_shift)
        report(model, prediction, zero_terminal_snr)
        sampling = current_sampling(patched)
        log.info("Lune Discrete Schedule: %s, %s (ComfyUI '%s') %g → %g, zero terminal SNR %s: σ %.4g … %.6g%s.",
                 prediction, beta_schedule, COMFY_NAMES[beta_schedule], beta_start, beta_end,
                 "on" if zero_terminal_snr else "off", float(sampling.sigma_min), float(sampling.sigma_max),
                 f", timestep label shift {timestep_label_shift:g}" if timestep_label_shift else "")
        return (patched,)
