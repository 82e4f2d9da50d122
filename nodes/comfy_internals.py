"""The pack's one boundary to ComfyUI internals: every ``comfy.*`` / ``folder_paths`` symbol the pack uses.

Nothing else in the pack imports ComfyUI. Each symbol is bound here once, by name, with the reason the pack needs
it; where ComfyUI moved or added something between the supported versions (0.3.75 and 0.28.2), the binding
feature-detects it (several candidate paths, newest first, or an optional symbol that callers test for). A
required symbol that a ComfyUI release no longer has stops the pack at import time with a message naming the
symbol, instead of a user's workflow failing later; ``tests/integration/test_comfy_contract.py`` binds every entry
on each supported version. The list is mirrored in docs/reference.md ("ComfyUI internals the pack uses").
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internal:
    """One ComfyUI symbol: ``paths`` are dotted candidates (first found wins), ``why`` is what the pack uses it for."""
    name: str
    paths: tuple[str, ...]
    why: str
    required: bool = True


class MissingComfyInternal(ImportError):
    """A ComfyUI symbol the pack needs is absent from this ComfyUI."""


INTERNALS: dict[str, Internal] = {}
_MISSING = object()


def lookup(path: str) -> Any:
    """Resolve ``package.module.attr.attr`` (the longest importable module prefix, then attributes); _MISSING if
    any part is absent."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def comfyui_version() -> str:
    version = lookup("comfyui_version.__version__")
    return "unknown" if version is _MISSING else str(version)


def _bind(name: str, *paths: str, why: str, required: bool = True) -> Any:
    INTERNALS[name] = Internal(name, paths, why, required)
    for path in paths:
        obj = lookup(path)
        if obj is not _MISSING:
            return obj
    if required:
        raise MissingComfyInternal(
            f"ComfyUI-Lune needs {' or '.join(paths)} ({why}), which this ComfyUI ({comfyui_version()}) does not "
            "have. Update ComfyUI-Lune, or use a ComfyUI version listed in its README.")
    return None


def bound(name: str) -> Any:
    """The object bound for ``name`` now (None for an absent optional symbol); the contract test uses it."""
    internal = INTERNALS[name]
    for path in internal.paths:
        obj = lookup(path)
        if obj is not _MISSING:
            return obj
    return None


# -- model folders (folder_paths) ---------------------------------------------------------------------------------
get_full_path = _bind("get_full_path", "folder_paths.get_full_path",
                      why="resolve a listed model name to its file")
get_filename_list = _bind("get_filename_list", "folder_paths.get_filename_list",
                          why="the model lists of the loader and merge combos")
get_folder_paths = _bind("get_folder_paths", "folder_paths.get_folder_paths",
                         why="model folder roots (path containment, embeddings)")
add_model_folder_path = _bind("add_model_folder_path", "folder_paths.add_model_folder_path",
                              why="register models/lyra")
_folder_names_and_paths = _bind("folder_names_and_paths", "folder_paths.folder_names_and_paths",
                                why="add the .pt extensions to models/lyra")
supported_pt_extensions = _bind("supported_pt_extensions", "folder_paths.supported_pt_extensions",
                                why="the weight file extensions ComfyUI lists")
_bind("models_dir", "folder_paths.models_dir", why="where downloads are placed (read at call time: models_dir())")


def models_dir() -> str:
    """``folder_paths.models_dir`` read now (a --base-directory run sets it at start-up)."""
    return lookup("folder_paths.models_dir")


def folder_extensions(folder: str) -> set:
    return _folder_names_and_paths[folder][1]


# -- building models (comfy.sd): the stock loaders, so a Lune MODEL is a stock MODEL --------------------------------
load_state_dict_guess_config = _bind(
    "load_state_dict_guess_config", "comfy.sd.load_state_dict_guess_config",
    why="build MODEL, CLIP and VAE from a single-file checkpoint's state dict (as CheckpointLoaderSimple)")
load_diffusion_model_state_dict = _bind(
    "load_diffusion_model_state_dict", "comfy.sd.load_diffusion_model_state_dict",
    why="build MODEL from a UNet-only state dict, LDM or diffusers keys (as UNETLoader)")
load_checkpoint_guess_config = _bind(
    "load_checkpoint_guess_config", "comfy.sd.load_checkpoint_guess_config",
    why="load the merged checkpoint the merge node wrote; Load Checkpoint (Lune downloads)")
CLIP = _bind("CLIP", "comfy.sd.CLIP", why="build CLIP from a donor checkpoint's CLIP tensors (clip_vae_from)")
VAE = _bind("VAE", "comfy.sd.VAE", why="build VAE from a donor checkpoint's VAE tensors (clip_vae_from)")
SD15 = _bind("SD15", "comfy.supported_models.SD15",
             why="recognise SD1.5 models; the donor CLIP/VAE key layout")
ModelPatcher = _bind("ModelPatcher", "comfy.model_patcher.ModelPatcher",
                     why="manage Lyra like a text encoder; recognise a MODEL/LYRA input")

# 0.28.x: loaders take ``disable_dynamic`` and register a reload factory (``cached_patcher_init``) on what they
# return, used by Dynamic VRAM's non-dynamic delegate and by multi-GPU deep clones.
DYNAMIC_LOADERS = "disable_dynamic" in inspect.signature(load_diffusion_model_state_dict).parameters


def register_reload_factory(patcher, factory, args: tuple, index: int | None = None) -> None:
    """Let ComfyUI rebuild ``patcher``'s model from its file, as the stock loaders do (0.28.x
    ``cached_patcher_init = (factory, args[, index])``; ``factory(*args, disable_dynamic=...)`` must return a
    ModelPatcher, or a tuple whose ``index`` item is one). A no-op on ComfyUI versions without it."""
    if DYNAMIC_LOADERS and patcher is not None:
        patcher.cached_patcher_init = (factory, args) if index is None else (factory, args, index)


# 0.28.x: ``CLIP(..., state_dict=)`` loads the weights in the constructor (and logs missing keys itself).
CLIP_LOADS_STATE_DICT = "state_dict" in inspect.signature(CLIP.__init__).parameters


def build_clip(clip_target, clip_sd: dict, embedding_directory) -> tuple[Any, list[str]]:
    """(CLIP with ``clip_sd`` loaded, missing keys) the way this ComfyUI's checkpoint loader builds it; on versions
    whose constructor loads the weights, ComfyUI reports missing keys itself and the list is empty."""
    kwargs = {"embedding_directory": embedding_directory, "tokenizer_data": clip_sd,
              "parameters": calculate_parameters(clip_sd)}
    if CLIP_LOADS_STATE_DICT:
        return CLIP(clip_target, state_dict=clip_sd, **kwargs), []
    clip = CLIP(clip_target, **kwargs)
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    return clip, list(missing)


def stock_load_options(disable_dynamic: bool) -> dict:
    """Keyword arguments for the stock loaders: ``disable_dynamic`` where ComfyUI has it."""
    return {"disable_dynamic": disable_dynamic} if DYNAMIC_LOADERS else {}


# -- tensors and progress (comfy.utils) ----------------------------------------------------------------------------
ProgressBar = _bind("ProgressBar", "comfy.utils.ProgressBar", why="progress bars (downloads, merge, hand-off)")
calculate_parameters = _bind("calculate_parameters", "comfy.utils.calculate_parameters",
                             why="parameter count ComfyUI's CLIP wants (clip_vae_from)")
state_dict_prefix_replace = _bind("state_dict_prefix_replace", "comfy.utils.state_dict_prefix_replace",
                                  why="split a donor checkpoint into its VAE tensors, as comfy.sd does")
unet_to_diffusers = _bind("unet_to_diffusers", "comfy.utils.unet_to_diffusers",
                          why="ComfyUI's LDM ↔ diffusers UNet key map (merging files of both layouts)")
unet_config_from_diffusers_unet = _bind(
    "unet_config_from_diffusers_unet", "comfy.model_detection.unet_config_from_diffusers_unet",
    why="recognise a diffusers-named UNet from its tensor names and shapes (the merge's key map)")

# -- devices, memory and cancel (comfy.model_management) -----------------------------------------------------------
load_models_gpu = _bind("load_models_gpu", "comfy.model_management.load_models_gpu",
                        why="load Lyra onto its device before an encode")
text_encoder_device = _bind("text_encoder_device", "comfy.model_management.text_encoder_device",
                            why="Lyra's default device, as ComfyUI's text encoders")
text_encoder_offload_device = _bind("text_encoder_offload_device",
                                    "comfy.model_management.text_encoder_offload_device",
                                    why="where Lyra goes when memory is needed")
intermediate_device = _bind("intermediate_device", "comfy.model_management.intermediate_device",
                            why="the device conditioning tensors are returned on")
throw_exception_if_processing_interrupted = _bind(
    "throw_exception_if_processing_interrupted", "comfy.model_management.throw_exception_if_processing_interrupted",
    why="Cancel during long work (merge, downloads)")
processing_interrupted = _bind("processing_interrupted", "comfy.model_management.processing_interrupted",
                               why="poll Cancel while waiting for a download")
InterruptProcessingException = _bind("InterruptProcessingException",
                                     "comfy.model_management.InterruptProcessingException",
                                     why="what Cancel raises; ComfyUI reports it as an interruption, not an error")

# -- sampling (comfy.model_sampling, comfy.samplers, comfy.k_diffusion) ---------------------------------------------
ModelSamplingDiscreteFlow = _bind("ModelSamplingDiscreteFlow", "comfy.model_sampling.ModelSamplingDiscreteFlow",
                                  why="base of the flow sampling patch (shifted σ, timestep = multiplier·σ)")
ModelSamplingDiscrete = _bind("ModelSamplingDiscrete", "comfy.model_sampling.ModelSamplingDiscrete",
                              why="base of Sol's and the discrete-schedule patches")
ModelSamplingFlux = _bind("ModelSamplingFlux", "comfy.model_sampling.ModelSamplingFlux",
                          why="recognise a stock Flux patch, whose shift is μ, and refuse to build grids from it")
CONST = _bind("CONST", "comfy.model_sampling.CONST", why="flow prediction: x0 = x − σ·v")
EPS = _bind("EPS", "comfy.model_sampling.EPS", why="ε prediction for the discrete-schedule patch")
V_PREDICTION = _bind("V_PREDICTION", "comfy.model_sampling.V_PREDICTION",
                     why="v prediction for Sol and the discrete-schedule patch")
KSAMPLER = _bind("KSAMPLER", "comfy.samplers.KSAMPLER", why="the SAMPLER object of Lune Sampler Adapter")
KSampler = _bind("KSampler", "comfy.samplers.KSampler",
                 why="its SAMPLERS/SCHEDULERS lists feed the stock KSampler combos")
KSAMPLER_NAMES = _bind("KSAMPLER_NAMES", "comfy.samplers.KSAMPLER_NAMES", why="register lune_euler")
SAMPLER_NAMES = _bind("SAMPLER_NAMES", "comfy.samplers.SAMPLER_NAMES", why="register lune_euler")
SCHEDULER_NAMES = _bind("SCHEDULER_NAMES", "comfy.samplers.SCHEDULER_NAMES", why="register lune_flow")
SCHEDULER_HANDLERS = _bind("SCHEDULER_HANDLERS", "comfy.samplers.SCHEDULER_HANDLERS", why="register lune_flow")
SchedulerHandler = _bind("SchedulerHandler", "comfy.samplers.SchedulerHandler", why="register lune_flow")
k_diffusion_sampling = _bind("k_diffusion_sampling", "comfy.k_diffusion.sampling",
                             why="KSampler looks samplers up there as sample_<name>")
# -- text encoders (comfy.sd1_clip, comfy.text_encoders.t5): flan-t5-xl for Lyra-XL, built from ComfyUI's own T5 -------
SDClipModel = _bind("SDClipModel", "comfy.sd1_clip.SDClipModel",
                    why="base of the flan-t5-xl encoder (tokens → masked T5 states, as ComfyUI's T5 encoders)")
SD1ClipModel = _bind("SD1ClipModel", "comfy.sd1_clip.SD1ClipModel",
                     why="the named wrapper a CLIP object holds (clip name t5xl)")
SDTokenizer = _bind("SDTokenizer", "comfy.sd1_clip.SDTokenizer", why="the flan-t5-xl tokenizer (ComfyUI's T5 one)")
SD1Tokenizer = _bind("SD1Tokenizer", "comfy.sd1_clip.SD1Tokenizer", why="the named tokenizer wrapper (t5xl)")
T5 = _bind("T5", "comfy.text_encoders.t5.T5", why="ComfyUI's T5 encoder module, built with a T5 v1.1 XL config")
_t5_module = _bind("t5_module", "comfy.text_encoders.t5", why="where ComfyUI ships the T5 tokenizer (t5_tokenizer/)")
T5TokenizerFast = _bind("T5TokenizerFast", "transformers.T5TokenizerFast",
                        why="the tokenizer class ComfyUI's T5 encoders use with that folder")


def t5_tokenizer_dir() -> str:
    """ComfyUI's T5 sentencepiece tokenizer folder (``comfy/text_encoders/t5_tokenizer``)."""
    import os

    return os.path.join(os.path.dirname(os.path.realpath(_t5_module.__file__)), "t5_tokenizer")
