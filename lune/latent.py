"""Latent-multiplier correction for sd15-flow-lune (its model card on Hugging Face).

The lune card: the model "was trained with many raw unscaled latents, makes default output hazy"; the fix is
to multiply the sampled latent by a factor < 1 before VAE decoding ("lower it if the image is too bright or
pixelated"). The author's number is only in a screenshot, so "auto" estimates it, once per batch:

    factor = clamp(target_std / √(mean_b Var(x_b)), lo, hi)

where ``x_b`` is image b of the batch ComfyUI hands to VAEDecode (raw VAE space), ``Var`` the variance of all its
values about its own mean, and ``target_std = 1 / 0.18215`` —
the spread SD1.5's VAE latents have by construction of the 0.18215 scale factor. ``hi = 1`` means auto only
ever darkens/softens, never amplifies. One factor for the whole batch (the root-mean of the per-image variances,
so images with different mean colours do not inflate it): every image of a batch gets the same correction. The
estimate still depends on what was sampled, so two separate runs can get different factors — use a fixed
multiplier to compare prompts. Bounds and target are module constants (README "Decisions").
"""
from __future__ import annotations

import torch

from .errors import LuneError
from .variants import UNNAMED, get_variant

SD15_SCALE_FACTOR = 0.18215
AUTO_TARGET_STD = 1.0 / SD15_SCALE_FACTOR
AUTO_MIN_FACTOR = 0.25
AUTO_MAX_FACTOR = 1.0
MANUAL_RANGE = (0.0, 4.0)
SD15_LATENT_CHANNELS = 4
# Latent families a user may wire into a Lune graph by mistake, by channel count.
_FOREIGN_CHANNELS = {16: "Flux/SD3", 128: "LTX-Video", 48: "Wan 2.2", 32: "Hunyuan/Cosmos video"}
LATENT_FIX = ("Use EmptyLatentImage (not EmptySD3LatentImage or a video latent), or VAE Encode with the Lune "
              "checkpoint's SD1.5 VAE; for a latent made by another model family (SDXL, SD3, Flux), use Lune Latent "
              "Hand-off to convert it.")


def sd15_latent_problem(latent: torch.Tensor) -> str | None:
    """Why ``latent`` is not an SD1.5/Lune latent ``[B, 4, H/8, W/8]``, as a message with the fix; None if it is."""
    shape = list(latent.shape)
    if latent.ndim == 4 and shape[1] == SD15_LATENT_CHANNELS:
        return None
    if latent.ndim == 4:
        family = _FOREIGN_CHANNELS.get(shape[1])
        what = f"this latent has {shape[1]}" + (f" ({family})" if family else "") + f", shape {shape}"
    else:
        what = f"this is a {latent.ndim}-D latent {shape}" + (" (video)" if latent.ndim == 5 else "")
    return f"Lune is SD1.5: {SD15_LATENT_CHANNELS} latent channels, [batch, 4, height/8, width/8]; {what}. {LATENT_FIX}"


def nonfinite_problem(latent: torch.Tensor) -> str | None:
    """A message naming how many values of ``latent`` are NaN/Inf (and the fix), or None when all are finite."""
    finite = torch.isfinite(latent)
    if bool(finite.all()):
        return None
    nan = int(torch.isnan(latent).sum())
    inf = int(latent.numel() - int(finite.sum()) - nan)
    return (f"the latent contains non-finite values ({nan} NaN, {inf} Inf of {latent.numel()}): the sampler diverged "
            "or the latent file is corrupt, and no multiplier can repair that. Re-sample it: load the model with "
            "Load Lune Model (a Lune file sampled as EPS or in fp16 can blow up), lower the CFG, or start ComfyUI "
            "with --force-fp32.")


def estimate_multiplier(latent: torch.Tensor, target_std: float = AUTO_TARGET_STD,
                        lo: float = AUTO_MIN_FACTOR, hi: float = AUTO_MAX_FACTOR) -> torch.Tensor:
    """One factor for a [B, C, H, W] batch: ``clamp(target_std / √(mean_b Var(x_b)), lo, hi)``; a 0-d tensor."""
    if latent.ndim < 3:
        raise ValueError(f"expected a [B, C, H, W] latent, got shape {tuple(latent.shape)}")
    flat = latent.detach().double().reshape(latent.shape[0], -1)
    pooled_std = flat.var(dim=1, unbiased=False).mean().sqrt().clamp_min(1e-6)
    return (target_std / pooled_std).clamp(lo, hi).float()


def apply_multiplier(latent: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``latent · factor`` with a scalar or per-sample [B] factor; returns a new tensor of latent's dtype."""
    if isinstance(factor, torch.Tensor) and factor.ndim == 1:
        factor = factor.to(latent.device, torch.float32).view(-1, *([1] * (latent.ndim - 1)))
    return (latent.float() * factor).to(latent.dtype)


VARIANT_DEFAULT, AUTO, FIXED = "variant default", "auto", "fixed"
MODES = (VARIANT_DEFAULT, AUTO, FIXED)


def resolve_mode(mode: str, multiplier: float, variant_name: str | None, has_model: bool) -> tuple[str, float, str]:
    """(auto or fixed, multiplier, note for the log) for a Lune Latent Multiply setting.

    ``variant default`` takes the variant's own multiplier (``Variant.latent_multiplier``: None → auto, a number →
    fixed at it); ``variant_name`` is what the connected MODEL carries (None: not loaded by the pack)."""
    note = ""
    if mode == VARIANT_DEFAULT:
        if not has_model:
            raise LuneError("mode 'variant default' needs the model input: connect the Lune model, or choose "
                            "mode auto or fixed.")
        if variant_name is None:
            raise LuneError("the connected MODEL carries no Lune variant (not loaded by Load Lune Model); choose "
                            "mode auto or fixed.")
        default = get_variant(variant_name).latent_multiplier
        if variant_name == UNNAMED.name:
            note = ("the model's variant was not named, so the latent is left unchanged (1.0). If it is "
                    "sd15-flow-lune, pick variant lune on Load Lune Model (or mode auto).")
        mode, multiplier = (AUTO, multiplier) if default is None else (FIXED, default)
    if mode == FIXED and not MANUAL_RANGE[0] <= multiplier <= MANUAL_RANGE[1]:
        raise LuneError(f"multiplier {multiplier} is out of range {MANUAL_RANGE}; use a value below 1 to "
                        "tone down a bright or pixelated image.")
    if mode not in (AUTO, FIXED):
        raise LuneError(f"unknown mode {mode!r}")
    return mode, float(multiplier), note
