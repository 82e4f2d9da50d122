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
SHIFT_LIMITS = {"min": 0.05, "max": SHIFT_MAX, "step": 0.05}  # the shift widgets of the loader and Lune Flow Shift


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
    description: str
    hf_unet_file: str | None = None  # file to fetch for the loader's download entry (None: no single known file)
    # flow only: UNet timestep = timestep_multiplier·σ; x̂0 = x_σ − σ·output_sign·output (−1: model predicts x0 − ε)
    timestep_multiplier: float = 1000.0
    output_sign: float = 1.0


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
        description="Sol: v-prediction on the SD1.5 discrete schedule, Euler on the trailing grid (not flow)."),
    "sd-flow-alpha": Variant(
        name="sd-flow-alpha", prediction=FLOW, default_shift=1.0, latent_multiplier=1.0,
        hf_repo="opendiffusionai/sd-flow-alpha",
        description="opendiffusionai/sd-flow-alpha and finetunes (spacepxl/sd15-flow-alpha-finetune): SD1.5 "
                    "retrained as flow, target ε − x0, UNet timestep 999·σ, trained without shift "
                    "(ppbrown/ai-training trainer/train_from_cached.py).",
        timestep_multiplier=999.0),
    "instaflow": Variant(
        name="instaflow", prediction=FLOW, default_shift=1.0, latent_multiplier=1.0,
        hf_repo="XCLiu/instaflow_0_9B_from_sd_1_5",
        description="InstaFlow-0.9B (1 step, CFG 1) and 2-Rectified Flow (XCLiu/2_rectified_flow_from_sd_1_5, "
                    "25 steps, CFG 1.0–2.0): UNet timestep 1000·σ, output x0 − ε, the negative of Lune's "
                    "(gnobitab/InstaFlow code/pipeline_rf.py: latents += dt·v_pred from noise to data). "
                    "Weights CC-BY-NC-4.0.",
        output_sign=-1.0),
}
VARIANT_NAMES = tuple(VARIANTS)

# When nothing names the variant the file is still sampled as rectified flow (every variant but sol is flow, and
# sol files are named by their repo, sd15-flow-matching) at the shift the user set, and its latents are left as
# they are: guessing "lune" would darken a lune-flux file (the newest lune-flux finetunes have no "flux" in their
# folder names), while 1.0 at worst leaves a lune image a little hazy. The loader's log tells the user to pick one.
UNNAMED = Variant(
    name="unnamed-flow", prediction=FLOW, default_shift=2.0, latent_multiplier=1.0, hf_repo="",
    description="Nothing names the file's variant: sampled as rectified flow, latents left unchanged (1.0). Pick "
                "the variant on Load Lune Model (lune needs the latent multiplier, lune-flux does not).")

# The metadata key that names the variant outright (the pack's converter writes it): its value is a variant name.
VARIANT_METADATA_KEY = "lune.variant"
# Metadata keys that describe *this* model, searched with the patterns below. Free-form keys are left out on
# purpose: ComfyUI's CheckpointSave stores the whole ``prompt`` and ``workflow`` JSON, a description may mention
# other models, and a trainer's ``cfg.model_id`` names the base model training started from.
#   modelspec.*  Stability AI's model-spec block in a safetensors ``__metadata__``
#   cfg.*        a training state's config dict (flattened by lune.formats.unet_from_training_state)
NAMING_METADATA_KEYS = ("modelspec.title", "modelspec.architecture", "cfg.run_name", "cfg.name", "cfg.hub_model_id",
                        "cfg.repo_id")

# Patterns per variant, most specific first (first hit wins), tried on the lower-cased naming metadata and on the
# path relative to the models folder. A new variant is one line here.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("sd-flow-alpha", r"sd(15)?[-_]flow[-_]alpha"),
    ("instaflow", r"instaflow|2[-_]rectified[-_]flow|rectifiedflowpipeline"),
    ("sol", r"sd15[-_]flow[-_]matching|(^|[^a-z])sol([^a-z]|$)"),
    ("lune-flux", r"lune[-_ ]?flux|flow[-_]lune[-_]flux|flux_t\d|lune.*flux"),
    ("lune", r"lune"),
)


# The loader's shift widget at this value means "the chosen variant's trained shift" (Variant.default_shift).
SHIFT_FROM_VARIANT = 0.0


def effective_shift(variant: Variant, requested: float) -> float:
    """The flow shift to install: ``requested``, or the variant's own default when it is SHIFT_FROM_VARIANT."""
    return variant.default_shift if requested == SHIFT_FROM_VARIANT else float(requested)


_PATTERN_RANK = {name: rank for rank, (name, _) in enumerate(_PATTERNS)}


def variant_named_in(text: str) -> tuple[Variant, str] | None:
    """(variant, matched words) for the first variant pattern found in ``text`` (case-insensitive), else None."""
    for name, pattern in _PATTERNS:
        m = re.search(pattern, text.lower())
        if m:
            return VARIANTS[name], m.group(0).strip(" _-/")
    return None


def get_variant(name: str) -> Variant:
    """The record of a variant name, ``UNNAMED.name`` included (a MODEL may carry it; a user never picks it)."""
    if name == UNNAMED.name:
        return UNNAMED
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Lune variant {name!r}; choose one of {', '.join(VARIANT_NAMES)}") from None


def naming_metadata(metadata: Mapping[str, object] | None) -> str:
    """``key=value`` of the NAMING_METADATA_KEYS present in ``metadata``: the only metadata detection searches."""
    if not metadata:
        return ""
    return " ".join(f"{k}={metadata[k]}" for k in NAMING_METADATA_KEYS
                    if isinstance(metadata.get(k), (str, int, float)))


def detect_variant(relative_path: str, metadata: Mapping[str, object] | None = None) -> tuple[Variant, str]:
    """Guess the variant; returns (variant, human-readable reason).

    Reads only what describes the model itself:
      1. metadata ``lune.variant`` holding a variant name → that variant;
      2. else the most specific variant (``_PATTERNS`` order) that a NAMING_METADATA_KEYS value or
         ``relative_path`` names — the path *relative to the models folder* the file was found in (for a download:
         repo id + file). Folders above the models folder (``/home/sol/ComfyUI/…``) say nothing about the file;
      3. nothing names one → UNNAMED (flow, latents unchanged), with a reason telling the user to pick one.
    """
    if _is_absolute(relative_path):
        raise ValueError(f"detect_variant needs the path relative to the models folder, got {relative_path!r}")
    named = (metadata or {}).get(VARIANT_METADATA_KEY)
    if isinstance(named, str) and named.strip().lower() in VARIANTS:
        return VARIANTS[named.strip().lower()], f"metadata {VARIANT_METADATA_KEY}={named.strip()}"
    if named is not None:
        log.warning("metadata %s=%r is not a variant this pack knows (%s); reading the names instead",
                    VARIANT_METADATA_KEY, named, ", ".join(VARIANT_NAMES))
    sources = (("metadata", naming_metadata(metadata)), ("path", relative_path.replace("\\", "/")))
    found = [(hit, source) for source, text in sources if (hit := variant_named_in(text))]
    if found:  # the most specific variant (``_PATTERNS`` order) whichever source names it; metadata wins a tie
        (variant, words), source = min(found, key=lambda f: _PATTERN_RANK[f[0][0].name])
        return variant, f"{source} mentions {words!r}"
    return UNNAMED, ("nothing in the file name, its folders inside the models folder or its metadata names a "
                     "variant: sampling as rectified flow with latents unchanged (factor 1.0). Pick the variant on "
                     "Load Lune Model (lune, lune-flux or sol)")


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", path) is not None
