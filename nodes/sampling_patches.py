"""ComfyUI model_sampling objects for the Lune family, composed from ComfyUI's own classes.

Pattern of comfy_extras/nodes_model_advanced.py: clone the MODEL, build a sampling object from the model's
config, ``set_parameters``, ``add_object_patch("model_sampling", obj)``. The original model is never touched
and a new patch replaces the old one (object patches are keyed), so shifts never stack.
"""
from __future__ import annotations

from ..lune.errors import UnsupportedModelError
from ..lune.latent import sd15_latent_problem
from ..lune.schedule import sol_timestep_label
from ..lune.variants import FLOW, UNNAMED, V_DISCRETE, Variant
from .comfy_internals import (CONST, SD15, V_PREDICTION, ModelSamplingDiscrete, ModelSamplingDiscreteFlow,
                              ModelSamplingFlux)


class LuneFlowSampling(ModelSamplingDiscreteFlow, CONST):
    """Rectified flow x_σ = σ·ε + (1−σ)·x0 for every SD1.5 flow model, with two per-model conventions:

    * ``timestep(σ) = multiplier·σ`` (float): 1000 for Lune (AbstractPhil/sd15-flow-lune trainer.py) and InstaFlow
      (gnobitab/InstaFlow code/pipeline_rf.py: t = (1 − i/N)·1000), 999 for sd-flow-alpha
      (ppbrown/ai-training trainer/train_from_cached.py);
    * ``calculate_denoised``: x0 = x_σ − σ·output_sign·output. Lune and sd-flow-alpha predict v = ε − x0 (sign +1,
      exactly ComfyUI's CONST); InstaFlow predicts x0 − ε (sign −1: its pipeline integrates latents += dt·v from
      noise to data).

    At multiplier 1000 and sign +1 it behaves exactly like stock ``ModelSamplingSD3(shift)``. The conventions are
    the trained model's, so they live on the class (one subclass per variant, ``flow_sampling_class``), never on
    the instance: whoever rebuilds the object as ``type(old)(model_config)`` (ComfyUI's ModelNoiseScale), deep-copies
    it or calls ``set_parameters(shift=…)`` (RES4LYF) keeps the variant. ``multiplier`` passed by such callers is
    ignored for the same reason.
    """
    lune_variant = UNNAMED.name
    timestep_multiplier = 1000.0
    output_sign = 1.0

    def set_parameters(self, shift=1.0, timesteps=1000, multiplier=None):
        super().set_parameters(shift=shift, timesteps=timesteps, multiplier=self.timestep_multiplier)

    def calculate_denoised(self, sigma, model_output, model_input):
        if self.output_sign != 1.0:  # InstaFlow; every other variant skips the extra tensor op per model call
            model_output = model_output * self.output_sign
        return super().calculate_denoised(sigma, model_output, model_input)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        require_sd15_latent(latent_image)
        return super().noise_scaling(sigma, noise, latent_image, max_denoise=max_denoise)


_FLOW_CLASSES: dict[str, type[LuneFlowSampling]] = {}


def flow_sampling_class(variant: Variant) -> type[LuneFlowSampling]:
    """The LuneFlowSampling subclass carrying ``variant``'s name, timestep multiplier and output sign (one per
    variant, reused, so ``isinstance``/``type`` comparisons and caches see one class)."""
    cls = _FLOW_CLASSES.get(variant.name)
    if cls is None:
        cls = type(LuneFlowSampling.__name__, (LuneFlowSampling,), {
            "__qualname__": f"LuneFlowSampling[{variant.name}]", "__module__": __name__,
            "lune_variant": variant.name, "timestep_multiplier": float(variant.timestep_multiplier),
            "output_sign": float(variant.output_sign)})
        _FLOW_CLASSES[variant.name] = cls
    return cls


class SolSampling(ModelSamplingDiscrete, V_PREDICTION):
    """Sol (AbstractPhil/sd15-flow-matching): v-prediction on SD1.5's discrete schedule, as the author samples it.

    * ``timestep(σ)`` → ``floor(999·shift(t/999))`` when a label shift > 0 is set (author tried 0/3/6/9);
      σ values and input scaling stay on the unshifted grid.
    * start noise is ``σ_max·ε`` (author) rather than ComfyUI's ``√(1+σ_max²)·ε``.
    """
    lune_variant = "sol"
    shift = 0.0

    def set_parameters(self, shift: float = 0.0, **_ignored):
        self.shift = float(shift)

    def timestep(self, sigma):
        return sol_timestep_label(super().timestep(sigma), self.shift)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        require_sd15_latent(latent_image)
        return super().noise_scaling(sigma, noise, latent_image, max_denoise=False)


def require_sd15_latent(latent_image) -> None:
    """Every sampler (KSampler, SamplerCustom*, RES4LYF) passes the start latent through ``noise_scaling`` of the
    patched model: the first place a Flux/SD3/video latent meets a Lune model. Refuse it there with the fix,
    instead of the UNet's conv error ("expected input[…, 16, …] to have 4 channels")."""
    problem = None if latent_image is None else sd15_latent_problem(latent_image)
    if problem:
        raise UnsupportedModelError(problem)


def is_sd15(model) -> bool:
    return isinstance(getattr(model.model, "model_config", None), SD15)


def describe_model(model) -> str:
    config = getattr(model.model, "model_config", None)
    return type(config).__name__ if config is not None else type(model.model).__name__


def require_sd15(model, node: str) -> None:
    if not is_sd15(model):
        raise UnsupportedModelError(
            f"{node} works on SD1.5-architecture models (Lune, Sol); this MODEL is {describe_model(model)}. "
            "For SD3/Flux/AuraFlow use ComfyUI's ModelSampling* nodes instead.")


def current_sampling(model):
    return model.get_model_object("model_sampling")


# The pack's own sampling patches — the only ones the lune_flow schedule and Lune Latent Multiply trust. A stock
# ModelSamplingSD3/AuraFlow/Flux patch is CONST with a ``shift`` too, but not in our convention (ModelSamplingFlux's
# shift is μ; the SD3 form of it is exp(μ)). A new flow convention of the pack is one more class here.
PACK_FLOW_SAMPLINGS: tuple[type, ...] = (LuneFlowSampling,)
PACK_SAMPLINGS: tuple[type, ...] = (*PACK_FLOW_SAMPLINGS, SolSampling)


def lune_variant_of(model) -> str | None:
    """The variant name the pack installed on this MODEL, or None when it carries no Lune patch."""
    sampling = current_sampling(model)
    return getattr(sampling, "lune_variant", None) if isinstance(sampling, PACK_SAMPLINGS) else None


def is_flow(model_sampling) -> bool:
    """True for the pack's own rectified-flow patches (PACK_FLOW_SAMPLINGS), whose ``shift`` is the SD3-form s."""
    return isinstance(model_sampling, PACK_FLOW_SAMPLINGS)


def describe_sampling(model_sampling) -> str:
    """What a MODEL's sampling object is, in the words a user can act on."""
    if isinstance(model_sampling, ModelSamplingFlux):
        return ("ComfyUI's ModelSamplingFlux patch, whose shift is μ (the SD3-form shift is exp(μ)), so a grid built "
                "from it would be silently wrong")
    if isinstance(model_sampling, CONST):
        return (f"a flow patch that is not the pack's ({type(model_sampling).__name__}, e.g. ModelSamplingSD3/"
                "AuraFlow), whose shift the pack cannot vouch for")
    return "no flow patch: it is still sampled as EPS/v-prediction, which gives wrong images"


def carry_noise_scale(previous, sampling) -> None:
    """Keep the previous patch's ``noise_scale`` (ComfyUI 0.28: ModelNoiseScale sets it; stock ModelSamplingSD3
    carries it over the same way). ComfyUI versions without noise scales have neither attribute."""
    if hasattr(previous, "noise_scale") and hasattr(sampling, "set_noise_scale"):
        sampling.set_noise_scale(previous.noise_scale)


def install_flow(model, shift: float, variant: Variant):
    """MODEL → new MODEL sampled as rectified flow with ``shift`` and the variant's timestep multiplier and output
    sign; replaces any earlier sampling patch, keeping its noise scale."""
    m = model.clone()
    sampling = flow_sampling_class(variant)(model.model.model_config)
    sampling.set_parameters(shift=float(shift))
    carry_noise_scale(current_sampling(model), sampling)
    m.add_object_patch("model_sampling", sampling)
    return m


def install_sol(model, label_shift: float = 0.0):
    """MODEL → new MODEL sampled as Sol (discrete v-prediction, optional timestep-label shift)."""
    m = model.clone()
    sampling = SolSampling(model.model.model_config)
    sampling.set_parameters(shift=label_shift)
    m.add_object_patch("model_sampling", sampling)
    return m


def install_variant(model, variant: Variant, shift: float):
    if variant.prediction == FLOW:
        return install_flow(model, shift, variant)
    if variant.prediction == V_DISCRETE:
        return install_sol(model, variant.default_shift)
    raise ValueError(f"unknown prediction type {variant.prediction!r}")
