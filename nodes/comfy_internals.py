"""The pack's one boundary to ComfyUI internals: every ``comfy.*`` / ``folder_paths`` symbol the pack uses.

Nothing else in the pack imports ComfyUI. Each symbol is one row of ``TABLE`` below, with the reason the pack needs
it, and is bound once, at import, by name (``from .comfy_internals import CLIP`` or ``comfy_api.CLIP``). Where
ComfyUI moved or added something between the supported versions (0.3.75 and 0.28.2), a row names several candidate
paths (``a or b``: the first found wins) or marks the symbol optional (``?``: absent → None, callers test for it).
A required symbol that a ComfyUI release no longer has stops the pack at import time with a message naming the
symbol, instead of a user's workflow failing later; ``tests/integration/test_comfy_contract.py`` binds every row on
each supported version and keeps docs/reference.md ("ComfyUI internals the pack uses") equal to the table.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any

# One row per symbol: ``dotted.path[ or other.path][?][ as name]: why``. The name in the pack is the path's last part
# unless ``as`` gives another; ``?`` makes it optional; indented lines continue the why; ``#`` lines are headings.
TABLE = """
# -- model folders (folder_paths)
folder_paths.get_full_path: resolve a listed model name to its file
folder_paths.get_filename_list: the model lists of the loader and merge combos
folder_paths.get_folder_paths: model folder roots (path containment, embeddings)
folder_paths.add_model_folder_path: register models/lyra
folder_paths.folder_names_and_paths: add the .pt extensions to models/lyra
folder_paths.supported_pt_extensions: the weight file extensions ComfyUI lists
folder_paths.models_dir: where downloads are placed (read at call time: models_dir())

# -- building models (comfy.sd): the stock loaders, so a Lune MODEL is a stock MODEL
comfy.sd.load_state_dict_guess_config: build MODEL, CLIP and VAE from a single-file checkpoint's state dict (as
    CheckpointLoaderSimple)
comfy.sd.load_diffusion_model_state_dict: build MODEL from a UNet-only state dict, LDM or diffusers keys (as
    UNETLoader)
comfy.sd.load_checkpoint_guess_config: load the merged checkpoint the merge node wrote; Load Checkpoint (Lune
    downloads)
comfy.sd.CLIP: build CLIP from a donor checkpoint's CLIP tensors (clip_vae_from)
comfy.sd.VAE: build VAE from a donor checkpoint's VAE tensors (clip_vae_from)
comfy.supported_models.SD15: recognise SD1.5 models; the donor CLIP/VAE key layout
comfy.model_patcher.ModelPatcher: manage Lyra like a text encoder; recognise a MODEL/LYRA input

# -- tensors and progress (comfy.utils)
comfy.utils.ProgressBar: progress bars (downloads, merge, hand-off)
comfy.utils.calculate_parameters: parameter count ComfyUI's CLIP wants (clip_vae_from)
comfy.utils.state_dict_prefix_replace: split a donor checkpoint into its VAE tensors, as comfy.sd does
comfy.utils.unet_to_diffusers: ComfyUI's LDM ↔ diffusers UNet key map (merging files of both layouts)
comfy.model_detection.unet_config_from_diffusers_unet: recognise a diffusers-named UNet from its tensor names and
    shapes (the merge's key map)

# -- devices, memory and cancel (comfy.model_management)
comfy.model_management.load_models_gpu: load Lyra onto its device before an encode
comfy.model_management.text_encoder_device: Lyra's default device, as ComfyUI's text encoders
comfy.model_management.text_encoder_offload_device: where Lyra goes when memory is needed
comfy.model_management.intermediate_device: the device conditioning tensors are returned on
comfy.model_management.throw_exception_if_processing_interrupted: Cancel during long work (merge, downloads)
comfy.model_management.processing_interrupted: poll Cancel while waiting for a download
comfy.model_management.InterruptProcessingException: what Cancel raises; ComfyUI reports it as an interruption, not an
    error

# -- sampling (comfy.model_sampling, comfy.samplers, comfy.k_diffusion)
comfy.model_sampling.ModelSamplingDiscreteFlow: base of the flow sampling patch (shifted σ, timestep = multiplier·σ)
comfy.model_sampling.ModelSamplingDiscrete: base of Sol's and the discrete-schedule patches
comfy.model_sampling.ModelSamplingFlux: recognise a stock Flux patch, whose shift is μ, and refuse to build grids from
    it
comfy.model_sampling.CONST: flow prediction: x0 = x − σ·v
comfy.model_sampling.EPS: ε prediction for the discrete-schedule patch
comfy.model_sampling.V_PREDICTION: v prediction for Sol and the discrete-schedule patch
comfy.samplers.KSAMPLER: the SAMPLER object of Lune Sampler Adapter
comfy.samplers.KSampler: its SAMPLERS/SCHEDULERS lists feed the stock KSampler combos
comfy.samplers.KSAMPLER_NAMES: register lune_euler
comfy.samplers.SAMPLER_NAMES: register lune_euler
comfy.samplers.SCHEDULER_NAMES: register lune_flow
comfy.samplers.SCHEDULER_HANDLERS: register lune_flow
comfy.samplers.SchedulerHandler: register lune_flow
comfy.k_diffusion.sampling as k_diffusion_sampling: KSampler looks samplers up there as sample_<name>

# -- text encoders (comfy.sd1_clip, comfy.text_encoders.t5): flan-t5-xl for Lyra-XL, built from ComfyUI's own T5
comfy.sd1_clip.SDClipModel: base of the flan-t5-xl encoder (tokens → masked T5 states, as ComfyUI's T5 encoders)
comfy.sd1_clip.SD1ClipModel: the named wrapper a CLIP object holds (clip name t5xl)
comfy.sd1_clip.SDTokenizer: the flan-t5-xl tokenizer (ComfyUI's T5 one)
comfy.sd1_clip.SD1Tokenizer: the named tokenizer wrapper (t5xl)
comfy.text_encoders.t5.T5: ComfyUI's T5 encoder module, built with a T5 v1.1 XL config
comfy.text_encoders.t5 as t5_module: where ComfyUI ships the T5 tokenizer (t5_tokenizer/)
transformers.T5TokenizerFast: the tokenizer class ComfyUI's T5 encoders use with that folder
"""


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
_BOUND: dict[str, Any] = {}
_MISSING = object()
_ROW = re.compile(r"^(?P<paths>[\w.]+(?: or [\w.]+)*)(?P<optional>\?)?(?: as (?P<name>\w+))?: (?P<why>.+)$")


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


def parse_table(text: str) -> list[Internal]:
    """The rows of ``TABLE`` (continuation lines joined to their row)."""
    rows: list[str] = []
    for line in text.splitlines():
        if line.startswith("    ") and rows:
            rows[-1] += " " + line.strip()
        elif line.strip() and not line.startswith("#"):
            rows.append(line.strip())
    internals = []
    for row in rows:
        match = _ROW.match(row)
        if match is None:
            raise ValueError(f"comfy_internals.TABLE: cannot read the row {row!r}")
        paths = tuple(match["paths"].split(" or "))
        name = match["name"] or paths[0].rsplit(".", 1)[-1]
        internals.append(Internal(name, paths, match["why"], required=not match["optional"]))
    return internals


def _bind(name: str, *paths: str, why: str, required: bool = True) -> Any:
    """Register ``name`` and return the first of ``paths`` this ComfyUI has (None for an absent optional one)."""
    INTERNALS[name] = Internal(name, paths, why, required)
    obj = bound(name)
    if obj is None and required:
        raise MissingComfyInternal(
            f"ComfyUI-Lune needs {' or '.join(paths)} ({why}), which this ComfyUI ({comfyui_version()}) does not "
            "have. Update ComfyUI-Lune, or use a ComfyUI version listed in its README.")
    return obj


def bound(name: str) -> Any:
    """The object bound for ``name`` now (None for an absent optional symbol); the contract test uses it."""
    for path in INTERNALS[name].paths:
        obj = lookup(path)
        if obj is not _MISSING:
            return obj
    return None


for _internal in parse_table(TABLE):
    _BOUND[_internal.name] = _bind(_internal.name, *_internal.paths, why=_internal.why, required=_internal.required)


def __getattr__(name: str) -> Any:
    """``comfy_internals.<name>`` for every row of the table."""
    try:
        return _BOUND[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BOUND))


def models_dir() -> str:
    """``folder_paths.models_dir`` read now (a --base-directory run sets it at start-up)."""
    return lookup("folder_paths.models_dir")


def folder_extensions(folder: str) -> set:
    return _BOUND["folder_names_and_paths"][folder][1]


# 0.28.x: loaders take ``disable_dynamic`` and register a reload factory (``cached_patcher_init``) on what they
# return, used by Dynamic VRAM's non-dynamic delegate and by multi-GPU deep clones.
DYNAMIC_LOADERS = "disable_dynamic" in inspect.signature(_BOUND["load_diffusion_model_state_dict"]).parameters


def register_reload_factory(patcher, factory, args: tuple, index: int | None = None) -> None:
    """Let ComfyUI rebuild ``patcher``'s model from its file, as the stock loaders do (0.28.x
    ``cached_patcher_init = (factory, args[, index])``; ``factory(*args, disable_dynamic=...)`` must return a
    ModelPatcher, or a tuple whose ``index`` item is one). A no-op on ComfyUI versions without it."""
    if DYNAMIC_LOADERS and patcher is not None:
        patcher.cached_patcher_init = (factory, args) if index is None else (factory, args, index)


# 0.28.x: ``CLIP(..., state_dict=)`` loads the weights in the constructor (and logs missing keys itself).
CLIP_LOADS_STATE_DICT = "state_dict" in inspect.signature(_BOUND["CLIP"].__init__).parameters


def build_clip(clip_target, clip_sd: dict, embedding_directory) -> tuple[Any, list[str]]:
    """(CLIP with ``clip_sd`` loaded, missing keys) the way this ComfyUI's checkpoint loader builds it; on versions
    whose constructor loads the weights, ComfyUI reports missing keys itself and the list is empty."""
    clip_class = _BOUND["CLIP"]
    kwargs = {"embedding_directory": embedding_directory, "tokenizer_data": clip_sd,
              "parameters": _BOUND["calculate_parameters"](clip_sd)}
    if CLIP_LOADS_STATE_DICT:
        return clip_class(clip_target, state_dict=clip_sd, **kwargs), []
    clip = clip_class(clip_target, **kwargs)
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    return clip, list(missing)


def stock_load_options(disable_dynamic: bool) -> dict:
    """Keyword arguments for the stock loaders: ``disable_dynamic`` where ComfyUI has it."""
    return {"disable_dynamic": disable_dynamic} if DYNAMIC_LOADERS else {}


def t5_tokenizer_dir() -> str:
    """ComfyUI's T5 sentencepiece tokenizer folder (``comfy/text_encoders/t5_tokenizer``)."""
    return os.path.join(os.path.dirname(os.path.realpath(_BOUND["t5_module"].__file__)), "t5_tokenizer")
