"""Variant hints from a diffusers pipeline folder around a UNet file (no ComfyUI).

A full diffusers pipeline folder (what ``DiffusionPipeline.save_pretrained`` writes, e.g. opendiffusionai/sd-flow-alpha
or XCLiu/instaflow_0_9B_from_sd_1_5) looks like::

    <root>/model_index.json                  {"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers",
                                               "FlowMatchEulerDiscreteScheduler"], …}
    <root>/scheduler/scheduler_config.json   {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0, …}
    <root>/unet/config.json                  {"_class_name": "UNet2DConditionModel", …}
    <root>/unet/diffusion_pytorch_model.safetensors

Only a few curated keys are read: the pipeline and scheduler class names and the scheduler's ``shift``. A hint
names a variant when
* the pipeline class names one (the variant table in ``lune.variants``; the InstaFlow authors' pipeline class is
  ``RectifiedFlowPipeline``, gnobitab/InstaFlow code/pipeline_rf.py), or
* the scheduler is diffusers' ``FlowMatchEulerDiscreteScheduler`` with shift 1.0 (its default): an SD1.5 pipeline
  saved with the flow-matching scheduler and no shift is sd-flow-alpha's layout (trained with σ ~ U(0, 1), no
  shift: ppbrown/ai-training trainer/train_from_cached.py). Another shift names nothing: that folder is
  somebody's own flow finetune and the user picks the variant.
Anything else (no pipeline files, a plain SD1.5 pipeline, unreadable JSON) returns None: never a guess.

``_name_or_path`` is never read: diffusers' ``save_pretrained`` records there the repo id or folder the weights were
loaded FROM (``ConfigMixin`` keeps the ``from_pretrained`` argument), which for a finetune is usually the model
training started from, e.g. a lune-flux continuation whose config still says ``AbstractPhil/sd15-flow-lune``. Trusting
it would give that lune-flux file Lune's latent multiplier and darken its images.
"""
from __future__ import annotations

import json
import logging
import os

from .variants import Variant, get_variant, variant_named_in

log = logging.getLogger("lune")

MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
FLOW_MATCH_SCHEDULER = "FlowMatchEulerDiscreteScheduler"
UNSHIFTED_FLOW_VARIANT = "sd-flow-alpha"


def pipeline_root(unet_path: str) -> str | None:
    """``<root>`` when ``unet_path`` is ``<root>/unet/<weights>``, else None (not a pipeline layout)."""
    unet_dir = os.path.dirname(os.path.abspath(unet_path))
    return os.path.dirname(unet_dir) if os.path.basename(unet_dir) == "unet" else None


def _read_json(path: str) -> dict:
    """The JSON object in ``path``; {} when absent or unreadable (a hint file must never break loading)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        log.warning("Lune loader: ignoring %s (%s); choose the variant yourself if auto picks the wrong one.", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def pipeline_hints(root: str) -> dict[str, str]:
    """The curated keys of a pipeline folder as {"model_index.json _class_name": value, …} (strings only)."""
    hints: dict[str, str] = {}
    for rel, keys in ((MODEL_INDEX, ("_class_name", "scheduler")),
                      (SCHEDULER_CONFIG, ("_class_name", "shift"))):
        data = _read_json(os.path.join(root, *rel.split("/")))
        for key in keys:
            value = data.get(key)
            if key == "scheduler" and isinstance(value, list) and len(value) == 2:
                value = value[1]  # model_index.json lists components as [library, class name]
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                hints[f"{rel} {key}"] = str(value)
    return hints


def variant_from_pipeline_folder(unet_path: str) -> tuple[Variant, str] | None:
    """(variant, reason) named by the pipeline folder around ``unet_path``, or None (see the module docstring)."""
    root = pipeline_root(unet_path)
    if root is None:
        return None
    hints = pipeline_hints(root)
    for source, value in hints.items():
        if source == f"{MODEL_INDEX} _class_name":
            named = variant_named_in(value)
            if named:
                return named[0], f"{source} mentions {named[1]!r}"
    scheduler = hints.get(f"{SCHEDULER_CONFIG} _class_name") or hints.get(f"{MODEL_INDEX} scheduler")
    if scheduler == FLOW_MATCH_SCHEDULER:
        shift = hints.get(f"{SCHEDULER_CONFIG} shift", "1.0")
        try:
            unshifted = float(shift) == 1.0
        except ValueError:
            unshifted = False
        if unshifted:
            return get_variant(UNSHIFTED_FLOW_VARIANT), f"pipeline scheduler {FLOW_MATCH_SCHEDULER} with shift {shift}"
        log.info("Lune loader: %s uses %s with shift %s, which names no known model; set variant yourself.",
                 root, FLOW_MATCH_SCHEDULER, shift)
    return None
