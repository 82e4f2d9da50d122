"""MODEL, CLIP and VAE from a Lune file, built by ComfyUI's own loaders so a Lune MODEL is a stock MODEL.

* single-file checkpoints → ``comfy.sd.load_state_dict_guess_config`` (what CheckpointLoaderSimple runs);
* UNet-only files (diffusers folders, training-state ``.pt``, bare UNets) → ``comfy.sd.load_diffusion_model_state_dict``
  (what UNETLoader runs; it renames diffusers SD1.5 keys itself).

The pack only reads the file (``lune.formats``: memory-mapped, weights-only, completeness checked) and hands the
state dict over, as ComfyUI-GGUF does: detection, dtypes, quantized layers, the patcher class (ComfyUI 0.28's
Dynamic-VRAM ``CoreModelPatcher``) stay ComfyUI's. Where ComfyUI can rebuild a model from its file (0.28's
``cached_patcher_init``, used by Dynamic VRAM and multi-GPU clones) the pack registers ``reload_part`` for it, as
the stock loaders register theirs.
"""
from __future__ import annotations

import logging
import os

from ..lune import formats
from ..lune.clip_vae_donor import read_clip_vae
from ..lune.errors import UnsupportedModelError
from . import comfy_internals as comfy_api

log = logging.getLogger("lune")

PARTS = ("model", "clip", "vae")


def _embeddings() -> list[str]:
    return comfy_api.get_folder_paths("embeddings")


def _build(ckpt: formats.LuneCheckpoint, parts: tuple[str, ...], disable_dynamic: bool = False) -> dict:
    """{part: ModelPatcher / CLIP / VAE} for the parts asked; only single-file checkpoints hold CLIP and VAE."""
    options = comfy_api.stock_load_options(disable_dynamic)
    metadata = dict(ckpt.metadata) if ckpt.metadata else None  # the stock loaders may pop entries from it
    name = os.path.basename(ckpt.path)
    if ckpt.layout == "single_file":
        out = comfy_api.load_state_dict_guess_config(
            ckpt.full_state_dict, output_vae="vae" in parts, output_clip="clip" in parts,
            output_model="model" in parts, embedding_directory=_embeddings(), metadata=metadata, **options)
        if out is None or ("model" in parts and out[0] is None):
            raise UnsupportedModelError(f"ComfyUI could not build an SD1.5 model from {name}.")
        return dict(zip(PARTS, out[:3]))
    if "model" not in parts:
        return {}
    model = comfy_api.load_diffusion_model_state_dict(ckpt.unet, metadata=metadata, **options)
    if model is None:
        raise UnsupportedModelError(f"ComfyUI could not build an SD1.5 UNet from {name}.")
    return {"model": model}


def reload_part(path: str, part: str, disable_dynamic: bool = False):
    """The ModelPatcher of ``part`` ("model", "clip" or "vae") rebuilt from the file at ``path``: the reload factory
    the pack registers, as the stock loaders register theirs (ComfyUI calls it with ``disable_dynamic``)."""
    built = _build(formats.read_checkpoint(path), (part,), disable_dynamic)[part]
    return built if part == "model" else built.patcher


def build_lune_models(ckpt: formats.LuneCheckpoint) -> tuple:
    """``(model, clip, vae)`` of a read Lune file; clip and vae are None for UNet-only files. The stock loaders
    take the tensors out of the checkpoint's state dict: ``ckpt`` is spent afterwards."""
    path = ckpt.path
    parts = PARTS if ckpt.layout == "single_file" else ("model",)
    built = _build(ckpt, parts)
    model, clip, vae = (built.get(p) for p in PARTS)
    comfy_api.register_reload_factory(model, reload_part, (path, "model"))
    if clip is not None:
        comfy_api.register_reload_factory(clip.patcher, reload_part, (path, "clip"))
    if vae is not None and getattr(vae, "patcher", None) is not None:
        comfy_api.register_reload_factory(vae.patcher, reload_part, (path, "vae"))
    return model, clip, vae


def load_donor_clip_vae(path: str, label: str):
    """CLIP and VAE of an SD1.5 checkpoint; its UNet is never read (any SD1.5 UNet, inpainting's 9 channels
    included, is fine). Built as ``comfy.sd.load_state_dict_guess_config`` builds them from a checkpoint's keys."""
    sd, metadata = read_clip_vae(path)
    config = comfy_api.SD15(comfy_api.SD15.unet_config)
    vae_sd = comfy_api.state_dict_prefix_replace(sd, {p: "" for p in config.vae_key_prefix}, filter_keys=True)
    vae = comfy_api.VAE(sd=config.process_vae_state_dict(vae_sd), metadata=metadata)
    clip_sd = config.process_clip_state_dict(sd)
    clip, missing = comfy_api.build_clip(config.clip_target(state_dict=clip_sd), clip_sd, _embeddings())
    missing = [k for k in missing if ".logit_scale" not in k and ".text_projection.weight" not in k]
    if missing:
        log.warning("clip_vae_from: CLIP weights missing from %s: %s", label, ", ".join(missing[:8]))
    return clip, vae
