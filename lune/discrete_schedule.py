"""Discrete DDPM noise schedules with custom betas and zero terminal SNR, as plain float64 torch (no ComfyUI).

What a discrete-schedule model (SD1.5, SD2, SDXL, their v-prediction and ZTSNR finetunes) was trained on is the
table of noise levels σ_t, t = 0 … T−1 (T = 1000). Everything here builds that table:

    betas        β_t                       (three shapes, see ``make_betas``)
    ᾱ            ᾱ_t = Π_{s ≤ t} (1 − β_s)                  Ho et al. 2020, arXiv 2006.11239, eq. 4
    σ            σ_t = √((1 − ᾱ_t) / ᾱ_t)                   k-diffusion / ComfyUI ``ModelSamplingDiscrete``
    ZTSNR        √ᾱ rescaled so that ᾱ_{T−1} = 0            Lin et al. 2023, arXiv 2305.08891, Algorithm 1
    finite top   σ_{T−1} = σ_{T−2}² / σ_{T−3} after ZTSNR   (see ``finite_terminal_sigma``)
    trailing     t_i = round(T − i·T/N) − 1                 Lin et al. 2023, section 3.3; diffusers "trailing"

Names: ours follow diffusers (``scaled_linear``, ``linear``, ``cosine``). ComfyUI and the original LDM code
(``comfy/ldm/modules/diffusionmodules/util.py`` ``make_beta_schedule``) call the same shapes ``linear``,
``sqrt_linear`` and ``cosine``: ComfyUI's "linear" IS diffusers' "scaled_linear" (see ``COMFY_NAMES``).

The table returned by ``discrete_sigmas`` is float64, finite and strictly increasing, so the two uses a sampler
makes of it are right at every σ: σ → t (ComfyUI picks the table entry nearest in log σ) and ``sigma_max``
(the last entry, where sampling starts).
"""
from __future__ import annotations

import math

import torch

from .errors import LuneError
from .schedule import trailing_timesteps

TRAIN_TIMESTEPS = 1000
BETA_SCHEDULES = ("scaled_linear", "linear", "cosine")
COMFY_NAMES = {"scaled_linear": "linear", "linear": "sqrt_linear", "cosine": "cosine"}
BETA_START_DEFAULT = 0.00085  # SD1.5/SD2/SDXL model_index / scheduler_config.json
BETA_END_DEFAULT = 0.012
BETA_END_MAX = 0.05  # about twice the largest published value (SQCU's 0.024): anything above is a typo
COSINE_OFFSET = 0.008  # Nichol & Dhariwal 2021 (arXiv 2102.09672), eq. 17, "s = 0.008"
COSINE_MAX_BETA = 0.999  # same paper: β clipped at 0.999 to avoid a singularity at t = T


def check_betas(schedule: str, beta_start: float, beta_end: float) -> None:
    """Raise LuneError naming the problem and the fix unless ``0 < beta_start < beta_end <= BETA_END_MAX``.

    ``cosine`` ignores both values, but they are still checked: a NaN or negative value in a saved workflow is a
    mistake worth reporting before it silently changes meaning when the schedule is switched back.
    """
    if schedule not in BETA_SCHEDULES:
        raise LuneError(f"unknown beta_schedule {schedule!r}; choose one of {', '.join(BETA_SCHEDULES)} "
                        "(scaled_linear = SD1.5/SD2/SDXL).")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not math.isfinite(value) or value <= 0:
            raise LuneError(f"{name} must be a positive number (got {value}); SD1.5/SD2/SDXL use "
                            f"beta_start {BETA_START_DEFAULT} and beta_end {BETA_END_DEFAULT}.")
    if beta_end <= beta_start:
        raise LuneError(f"beta_end ({beta_end}) must be larger than beta_start ({beta_start}): noise grows with t. "
                        f"Typical: beta_start {BETA_START_DEFAULT}, beta_end {BETA_END_DEFAULT} (stock) or 0.024 "
                        "(SQCU v-pred ZTSNR SDXL); did you swap the two?")
    if beta_end > BETA_END_MAX:
        raise LuneError(f"beta_end {beta_end} is above {BETA_END_MAX}: no published model uses such a schedule "
                        f"(stock 0.012, the largest known 0.024; this node accepts up to {BETA_END_MAX}). "
                        "Use the value from the model card (a misplaced decimal point?).")


def make_betas(schedule: str, beta_start: float, beta_end: float,
               timesteps: int = TRAIN_TIMESTEPS) -> torch.Tensor:
    """β_t, t = 0 … T−1, float64.

    * ``scaled_linear``: β_t = linspace(√β_start, √β_end, T)²  — diffusers ``DDPMScheduler`` "scaled_linear";
      the LDM / ComfyUI "linear"; what SD1.5, SD2 and SDXL were trained with.
    * ``linear``: β_t = linspace(β_start, β_end, T)  — Ho et al. 2020 (arXiv 2006.11239, section 4);
      diffusers "linear"; the LDM / ComfyUI "sqrt_linear".
    * ``cosine``: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008,
      β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)  — Nichol & Dhariwal 2021 (arXiv 2102.09672), eq. 17; diffusers
      "squaredcos_cap_v2"; ComfyUI "cosine". β_start / β_end are not used.
    """
    check_betas(schedule, beta_start, beta_end)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=0, max=COSINE_MAX_BETA)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s ≤ t}(1 − β_s) (Ho et al. 2020, arXiv 2006.11239, eq. 4), in float64."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def sigmas_from_alphas_cumprod(alpha_bar: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t): the noise level of x_t/√ᾱ_t = x0 + σ_t·ε (Karras et al. 2022, arXiv 2206.00364,
    table 1 "VP"; ComfyUI ``ModelSamplingDiscrete._register_schedule``). ᾱ_t = 0 gives σ_t = inf."""
    alpha_bar = alpha_bar.double()
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def rescale_zero_terminal_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Zero terminal SNR (Lin et al. 2023, arXiv 2305.08891, Algorithm 1; diffusers ``rescale_zero_terminal_snr``).

    With s_t = √ᾱ_t:  s ← (s − s_{T−1}) · s_0 / (s_0 − s_{T−1});  ᾱ ← s².
    The first level is unchanged (s_0 kept), the last becomes exactly 0 (pure noise, SNR 0), the rest is an affine
    map of √ᾱ. Float64 in, float64 out.
    """
    s = alpha_bar.double().sqrt()
    s_first, s_last = s[0].clone(), s[-1].clone()
    s = (s - s_last) * s_first / (s_first - s_last)
    return s * s


def finite_terminal_sigma(sigmas: torch.Tensor) -> torch.Tensor:
    """Replace an infinite top σ_{T−1} (ZTSNR) by one more step of the table's own log-σ spacing:

        log σ_{T−1} = 2·log σ_{T−2} − log σ_{T−3},   i.e.   σ_{T−1} = σ_{T−2}² / σ_{T−3}.

    Why this choice: the sampler needs a finite start (noise is scaled by √(1 + σ_max²)) and the table must stay
    strictly increasing for σ → t. A fixed constant does not do that: diffusers' ᾱ_T = 2⁻²⁴ (σ 4096) and
    ComfyUI's ᾱ_T = 4.8973451890853435e-08 (``rescale_zero_terminal_snr_sigmas``, σ 4518.8) both lie BELOW the
    penultimate σ once β_end ≥ 0.02 (β_end 0.024: σ_{T−2} = 11260.8 > 4518.8), so ComfyUI's nearest-log-σ lookup
    maps the start σ to the wrong timestep and ``sigma_max`` is not the largest σ. The extrapolation is always above
    σ_{T−2}, scales with β_end, and at the SD1.5 betas (0.00085 → 0.012) it equals ComfyUI's constant (σ 4518.76):
    stock ZTSNR sampling there is unchanged. At SNR ≈ 0 the exact value hardly matters for v-prediction:
    the UNet input c_in·x → ε and x̂0 → −v as σ → ∞.
    """
    out = sigmas.double().clone()
    if not math.isfinite(float(out[-1])):
        out[-1] = out[-2] * out[-2] / out[-3]
    return out


def discrete_sigmas(schedule: str = "scaled_linear", beta_start: float = BETA_START_DEFAULT,
                    beta_end: float = BETA_END_DEFAULT, zero_terminal_snr: bool = False,
                    timesteps: int = TRAIN_TIMESTEPS) -> torch.Tensor:
    """The model's σ table, index t = 0 … T−1, float64, finite and strictly increasing.

    betas (``make_betas``) → ᾱ (``alphas_cumprod``) → [ZTSNR rescale] → σ → [finite top]. Raises LuneError on
    settings out of range and if the result were not strictly increasing (it always is for valid settings).
    """
    alpha_bar = alphas_cumprod(make_betas(schedule, beta_start, beta_end, timesteps))
    if zero_terminal_snr:
        alpha_bar = rescale_zero_terminal_snr(alpha_bar)
    sigmas = finite_terminal_sigma(sigmas_from_alphas_cumprod(alpha_bar))
    steps_up = sigmas[1:] - sigmas[:-1]
    if not (torch.isfinite(sigmas).all() and sigmas[0] > 0 and (steps_up > 0).all()):
        raise LuneError(f"the {schedule} schedule {beta_start} → {beta_end} (zero_terminal_snr={zero_terminal_snr}) "
                        "gives no strictly increasing σ table; use the model card's values.")
    return sigmas


def trailing_sigmas(table: torch.Tensor, steps: int) -> torch.Tensor:
    """σ at the "trailing" timesteps t_i = round(T − i·T/N) − 1 (Lin et al. 2023, arXiv 2305.08891, section 3.3;
    diffusers ``timestep_spacing="trailing"``), followed by 0: N + 1 values starting at σ_max.

    When N divides T these are exactly the σ of ComfyUI's ``simple`` scheduler (``sigmas[-(1 + int(i·T/N))]``).
    """
    picked = table[trailing_timesteps(steps, len(table))]
    return torch.cat([picked, picked.new_zeros(1)])
