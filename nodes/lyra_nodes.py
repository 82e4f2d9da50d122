"""Lyra nodes: Load Lyra (CLIP+T5 fusion) → LYRA, and Lyra Encode (CLIP-L + T5) → SD1.5 CONDITIONING.

Lyra Encode, step by step (author's inference: lattice_vocabulary ``trainers/vae/lyra_inference.py``):

1. CLIP: exactly what CLIPTextEncode does (``clip.tokenize`` + ``clip.encode_from_tokens_scheduled``): SD1.5 CLIP-L
   last hidden state with the final LayerNorm, ``[B, 77·k, 768]``, plus ``pooled_output``.
2. T5: the author's 77-token t5-base last hidden state, pads attention-masked and not zeroed
   (``lyra_inputs.t5_hidden_states``) → ``[1, 77, 768]`` fp32.
3. Lyra (fp32, loaded by ComfyUI's model management, ``lyra_model.ready``): chunk 0 of the CLIP conditioning
   (first 77 tokens) with the T5 states → ``reconstruct_modality(…, "clip", mode)``; later chunks of a long prompt
   pass through unchanged; ``out = clip + strength·(recon − clip)`` (``lyra.transform_conditioning``): 1 = the
   author's behaviour, 0 = plain CLIP, bit for bit. Returned in the CLIP output's dtype and device.
"""
from __future__ import annotations

import logging

import torch

from ..lyra import LyraCheckpointError, LyraInputError, load_any_lyra, transform_conditioning

from . import downloads, lyra_inputs, lyra_model, paths
from .comfy_internals import text_encoder_device

log = logging.getLogger("lune.lyra")

DOWNLOAD_ENTRY = paths.LYRA_ENTRY.label

DEVICE_DEFAULT = "default"
DEVICES = (DEVICE_DEFAULT, "cpu")


def resolve_lyra(lyra_name: str) -> tuple[str, str | None]:
    """(weights path, explicit config path or None = the reader looks beside the weights)."""
    missing = LyraCheckpointError(
        f"Lyra file {lyra_name!r} was not found in models/lyra. Put model.pt (or a .safetensors) with its "
        f"config.json in models/lyra/<folder>/ and refresh the node list (press R), or pick {DOWNLOAD_ENTRY!r}.")
    files = downloads.choice_files(lyra_name, paths.LYRA_ENTRIES, paths.resolve_lyra, missing)
    if paths.find_entry(lyra_name, paths.LYRA_ENTRIES) is not None:
        config, weights = files  # a download entry lists config.json first
        return weights, config
    return files[0], None


def lyra_stamp(lyra_name: str) -> str:
    """Reload stamp of the weights and every config file the reader may use."""
    return downloads.choice_stamp(lyra_name, paths.LYRA_ENTRIES, paths.resolve_lyra, paths.lyra_companions)


class LyraLoader:
    """Load a Lyra, fp32: v1 for SD1.5 (AbstractPhil/vae-lyra: CLIP-L + t5-base) or an SDXL Lyra-XL
    (vae-lyra-sdxl-t5xl, vae-lyra-xl-adaptive-cantor, …-illustrious: CLIP-L + CLIP-G + flan-t5-xl), told apart by
    the weights' keys (``lyra.load_any_lyra``)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lyra_name": (paths.list_lyra(), {"tooltip": (
                    "Lyra weights in models/lyra (model.pt or .safetensors, config.json beside them or one folder "
                    "up). vae-lyra is SD1.5, the others SDXL. "
                    + downloads.entries_tooltip("lyra", "The [download] entries fetch a published Lyra"))}),
            },
            "optional": {
                "device": (list(DEVICES), {"default": DEVICE_DEFAULT, "tooltip": (
                    "default: ComfyUI's text-encoder device. Lyra (17 M params SD1.5, 54-139 M SDXL) runs in fp32.")}),
            },
        }

    RETURN_TYPES = (lyra_model.LYRA_TYPE,)
    RETURN_NAMES = ("lyra",)
    FUNCTION = "load"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = ("Loads a Lyra CLIP+T5 fusion VAE: vae-lyra (SD1.5) for Lyra Encode, the SDXL Lyras for Lyra Encode "
                   "SDXL.")

    @classmethod
    def IS_CHANGED(cls, lyra_name, device=DEVICE_DEFAULT):
        return (lyra_stamp(lyra_name), device)

    def load(self, lyra_name, device=DEVICE_DEFAULT):
        weights, config = resolve_lyra(lyra_name)
        target = text_encoder_device() if device == DEVICE_DEFAULT else torch.device(device)
        vae = load_any_lyra(weights, config, device=lyra_model.offload_device_for(target))
        log.info("Lyra loaded from %s (fp32), runs on %s", weights, target)
        return (lyra_model.manage(vae, target),)


class LyraEncode:
    """SD1.5 conditioning from CLIP-L + t5-base fused by Lyra (the author's inference, with a strength blend)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": lyra_model.encode_inputs(
            clip="SD1.5 CLIP-L (from the checkpoint). No clip-skip: Lyra saw the last layer.",
            t5="t5-base text encoder: CLIPLoader with type stable_audio.",
            lyra="From Load Lyra (CLIP+T5 fusion).",
            t5_cut=", cut to 77 tokens", sample_note=" (what the author's code does)",
            reconstruction="Lyra's reconstruction of CLIP (the author's behaviour). 0: plain CLIP conditioning")}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = ("CLIP Text Encode for SD1.5 with the Lyra CLIP+T5 fusion: use it for positive and negative "
                   "(empty text works). Long prompts: the first 77 tokens go through Lyra, the rest stay plain CLIP.")

    def encode(self, clip, t5, lyra, text, mode="mean", seed=0, strength=1.0):
        module = lyra_model.module_of(lyra)
        if lyra_model.is_xl(module):
            raise LyraInputError("lyra is an SDXL Lyra (CLIP-L + CLIP-G + flan-t5-xl); Lyra Encode is for SD1.5's "
                                 "vae-lyra. Use Lyra Encode SDXL with an SDXL checkpoint's CLIP and Load Lyra T5-XL.")
        config = module.config
        lyra_model.check_draw(mode, strength)
        lyra_inputs.check_clip(clip)
        lyra_inputs.check_t5(t5)
        conditioning = lyra_inputs.clip_conditioning(clip, text)
        for cond, _ in conditioning:
            lyra_inputs.check_clip_width(cond, config.modality_dims["clip"])
        if float(strength) == 0.0:
            return (conditioning,)
        t5_hidden = lyra_inputs.t5_hidden_states(t5, text, config.seq_len)
        lyra_inputs.check_t5_width(t5_hidden, config.modality_dims["t5"])
        vae = lyra_model.ready(lyra)
        out = [[transform_conditioning(vae, cond, t5_hidden, mode, seed, strength), dict(extra)]
               for cond, extra in conditioning]
        return (out,)
