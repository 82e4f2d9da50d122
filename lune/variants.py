"""The Lune model family: one record per variant, and variant detection from file names and metadata.

Everything a variant implies lives here, so changing a default is a one-line edit (README "Decisions").
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping

from .errors import LuneError

log = logging.getLogger("lune")

FLOW = "flow"            # rectified flow, velocity prediction, ComfyUI CONST + ModelSamplingDiscreteFlow
V_DISCRETE = "v_discrete"  # v-prediction on the SD1.5 discrete schedule (Sol)

TRAINED_SHIFT_RANGE = (2.0, 2.5)
SHIFT_MAX = 20.0  # beyond this σ' ≈ 1 for almost every step: a typo, not a setting


def check_flow_shift(shift: float) -> None:
    """Raise LuneError unless ``0 < shift <= SHIFT_MAX`` (also refuses NaN/inf arriving through a link)."""
    if not 0 < shift <= SHIFT_MAX:
        lo, hi = TRAINED_SHIFT_RANGE
        raise LuneError(f"shift must be > 0 and at most {SHIFT_MAX:g} (got {shift}); use 1.0 for no shift — "
                         f"Lune was trained at {lo}–{hi}, so {lo}–{hi} for Lune.")


@dataclass(frozen=True)
class Variant:
    name: str
    prediction: str
    default_shift: float          # flow: SD3 shift; sol: timestep-label shift (0 = author's default, none)
    latent_multiplier: float | None  # None = estimate from the sampled latent ("auto"); 1.0 = no correction
    hf_repo: str
    hf_unet_file: str | None       # file to fetch for the loader's download entry (None: no single known file)
    description: str


VARIANTS: dict[str, Variant] = {
    "lune": Variant(
        name="lune", prediction=FLOW, default_shift=2.0, latent_multiplier=None,
        hf_repo="AbstractPhil/sd15-flow-lune",
        hf_unet_file="sd15_flow_lune_e52_s52000.pt",
        description="SD1.5 rectified flow (first release). Output latents need a multiplier < 1 "
                    "(card: lower it if the image is too bright or pixelated); the pack estimates it by default."),
    "lune-flux": Variant(
        name="lune-flux", prediction=FLOW, default_shift=2.0, latent_multiplier=1.0,
        hf_repo="AbstractPhil/sd15-flow-lune-flux",
        hf_unet_file="flux_t2_6_pose_t4_6_port_t1_4/checkpoint-00018765/unet/diffusion_pytorch_model.safetensors",
        description="SD1.5 rectified flow, Flux-distilled continuation; no latent multiplier needed. Recommended."),
    "sol": Variant(
        name="sol", prediction=V_DISCRETE, default_shift=0.0, latent_multiplier=1.0,
        hf_repo="AbstractPhil/sd15-flow-matching",
        hf_unet_file=None,
        description="Sol: v-prediction on the SD1.5 discrete schedule, Euler on the trailing grid (not flow)."),
}
VARIANT_NAMES = tuple(VARIANTS)
DEFAULT_VARIANT = "lune"

# Patterns tried in order on the lower-cased path + metadata text; first hit wins.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("sol", r"sd15[-_]flow[-_]matching|(^|[^a-z])sol([^a-z]|$)"),
    ("lune-flux", r"lune[-_ ]?flux|flow[-_]lune[-_]flux|flux_t\d|lune.*flux"),
    ("lune", r"lune"),
)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Lune variant {name!r}; choose one of {', '.join(VARIANT_NAMES)}") from None


def detect_variant(path: str, metadata: Mapping[str, object] | None = None) -> tuple[Variant, str]:
    """Guess the variant from the file path and metadata; returns (variant, human-readable reason).

    The most specific variant wins (sol, then lune-flux, then lune), whether metadata (safetensors
    ``__metadata__`` or a training-state ``cfg``) or the path names it; for one variant metadata is cited first.
    Nothing recognisable → DEFAULT_VARIANT, with a reason that tells the user to pick one.
    """
    sources = []
    if metadata:
        sources.append(("metadata", " ".join(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (str, int, float)))))
    sources.append(("path", path.replace("\\", "/")))
    for name, pattern in _PATTERNS:  # most specific variant first, whichever source names it
        for source, text in sources:
            m = re.search(pattern, text.lower())
            if m:
                return VARIANTS[name], f"{source} mentions {m.group(0).strip(' _-/')!r}"
    return VARIANTS[DEFAULT_VARIANT], (f"nothing in the path or metadata names a variant; assuming {DEFAULT_VARIANT!r} "
                                       "(set variant explicitly if this is lune-flux or sol)")
