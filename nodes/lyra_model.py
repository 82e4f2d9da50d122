"""The LYRA socket type: a Lyra VAE (v1 for SD1.5 or a Lyra-XL) under ComfyUI's model management, like a CLIP.

Load Lyra returns ``comfy.model_patcher.ModelPatcher(LyraVAE, load_device, offload_device)`` — what ComfyUI's
``comfy/sd.py`` ``CLIP.__init__`` does for a text encoder: load device = ``text_encoder_device()`` (or the CPU when
chosen), offload device = ``text_encoder_offload_device()``. Before every use Lyra Encode calls
``comfy.model_management.load_models_gpu([patcher], force_full_load=True)``, as ``CLIP.load_model`` does with
``load_model_gpu`` — but always a full load: Lyra is only 17 M parameters, and the fusion's own parameters
(``temperature``, ``modality_embeddings``) sit on a non-leaf module, which ComfyUI's partial loader
(``ModelPatcher._load_list``) never moves. ComfyUI then offloads Lyra when other models need the memory, as it does
for every model. The weights stay fp32 (nothing here casts them).
"""
from __future__ import annotations

import logging

import torch

from ..lyra import MODES, LyraInputError, LyraVAE, LyraXL
from .comfy_internals import ModelPatcher, load_models_gpu, text_encoder_offload_device

log = logging.getLogger("lune.lyra")

LYRA_TYPE = "LYRA"


def encode_inputs(clip: str, t5: str, lyra: str, t5_cut: str, sample_note: str, reconstruction: str) -> dict:
    """The inputs both Lyra Encode nodes share (clip, t5, lyra, text, mode, seed, strength), worded per node: the
    first three are the tooltips of the encoder inputs."""
    return {
        "clip": ("CLIP", {"tooltip": clip}),
        "t5": ("CLIP", {"tooltip": t5}),
        "lyra": (LYRA_TYPE, {"tooltip": lyra}),
        "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": (
            "The prompt. CLIP reads it as usual (weights work); T5 gets it with (word:1.2) syntax and "
            f"embedding: references removed{t5_cut}.")}),
        "mode": (list(MODES), {"default": "mean", "tooltip": (
            f"mean: z = mu, deterministic. sample: z = mu + sigma·noise from seed{sample_note}.")}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                         "tooltip": "Noise seed for sample mode (ignored in mean mode)."}),
        "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
            f"1: {reconstruction}. Between: clip + strength·(lyra − clip).")}),
    }


def check_draw(mode: str, strength: float) -> None:
    """Refuse a ``mode`` / ``strength`` pair the Lyra Encode nodes cannot use (API prompts bypass the widgets)."""
    if mode not in MODES:
        raise LyraInputError(f"mode must be 'mean' or 'sample', got {mode!r}.")
    if not 0.0 <= float(strength) <= 1.0:
        raise LyraInputError(f"strength must be between 0 and 1, got {strength}.")


def manage(vae: LyraVAE, load_device: torch.device) -> ModelPatcher:
    """``vae`` (already on the offload device) wrapped for ComfyUI's model management."""
    offload = offload_device_for(load_device)
    return ModelPatcher(vae, load_device=load_device, offload_device=offload)


def offload_device_for(load_device: torch.device) -> torch.device:
    """Where a freshly read Lyra waits until its first use (the patcher's offload device)."""
    return load_device if load_device.type == "cpu" else text_encoder_offload_device()


def _is_lyra_module(obj) -> bool:
    return isinstance(obj, (LyraVAE, LyraXL))


def is_xl(module) -> bool:
    """True for a Lyra-XL module (SDXL: CLIP-L + CLIP-G + flan-t5-xl), False for Lyra v1 (SD1.5)."""
    return isinstance(module, LyraXL)


def _one_device(vae: LyraVAE, fallback: torch.device) -> None:
    """All weights on one device: a partial load (--novram) may leave some behind; then Lyra runs on ``fallback``."""
    devices = {t.device for t in vae.parameters()} | {t.device for t in vae.buffers()}
    if len(devices) > 1:
        log.info("Lyra weights are split over %s; running it on %s", sorted(map(str, devices)), fallback)
        vae.to(fallback)


def module_of(lyra) -> LyraVAE:
    """The LyraVAE inside a LYRA input (not loaded); refuses anything else."""
    if isinstance(lyra, ModelPatcher) and _is_lyra_module(lyra.model):
        return lyra.model
    if _is_lyra_module(lyra):  # a bare module (another pack, a script): used where it is
        return lyra
    raise LyraInputError(
        f"lyra is a {type(lyra).__name__}, not a Lyra model. Connect the LYRA output of 'Load Lyra (CLIP+T5 fusion)'.")


def ready(lyra) -> LyraVAE:
    """The LyraVAE of a LYRA input, loaded by ComfyUI onto its load device (a bare module: as it is)."""
    vae = module_of(lyra)
    if isinstance(lyra, ModelPatcher):
        load_models_gpu([lyra], force_full_load=True)
        _one_device(vae, lyra.offload_device)
    return vae
