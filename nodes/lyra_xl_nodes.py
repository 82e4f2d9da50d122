"""Lyra Encode SDXL: SDXL conditioning through a Lyra-XL (AbstractPhil's SDXL Lyra models), step by step
(the author's inference: AbstractEyes/mm-lyra ``nodes.py``, comfy-clip-shunts ``multiencoders/nodes.py``):

1. CLIP: the stock SDXL encode of ``text`` (``[B, 77·k, 2048]`` + pooled ``[B, 1280]``), which the output blends
   with and passes through, and — when the model was trained on other CLIP states (``clip_layer`` auto: the final
   layer with its LayerNorm for vae-lyra-sdxl-t5xl and vae-lyra-xl-adaptive-cantor) — the encode at that layer,
   which Lyra reads (``lyra_xl_inputs.clip_conditioning``).
2. T5: flan-t5-xl of the prompt, ``[1, ≥77, 2048]`` (``lyra_xl_inputs.t5_states``).
3. Lyra-XL on chunk 0: split at 768 into CLIP-L / CLIP-G, ``z = mu`` (or a seeded sample), decode both, concatenate;
   ``out = cond + strength·(recon − cond)``; later chunks unchanged; the pooled output is the original
   (``lyra.transform_sdxl_conditioning``). strength 0 returns the CLIP encode unchanged, bit for bit.
"""
from __future__ import annotations

import logging

from ..lyra import LyraInputError, transform_sdxl_conditioning
from ..lyra.xl_spec import CLIP_PENULTIMATE
from . import lyra_model, lyra_xl_inputs

log = logging.getLogger("lune.lyra")


class LyraEncodeSDXL:
    """SDXL conditioning from CLIP-L + CLIP-G + flan-t5-xl fused by a Lyra-XL."""

    @classmethod
    def INPUT_TYPES(cls):
        shared = lyra_model.encode_inputs(
            clip="The SDXL checkpoint's CLIP (CLIP-L + CLIP-G).",
            t5="flan-t5-xl from Load Lyra T5-XL (flan-t5-xl).",
            lyra="An SDXL Lyra from Load Lyra (CLIP+T5 fusion).",
            t5_cut="", sample_note="",
            reconstruction="Lyra's reconstruction (the author's output). 0: the CLIP encode unchanged")
        return {"required": {
            **shared,
            "clip_layer": (list(lyra_xl_inputs.CLIP_LAYERS), {"default": "auto", "tooltip": (
                "CLIP states Lyra reads. auto: what the model was trained on (Illustrious: stock SDXL "
                "penultimate; vae-lyra-sdxl-t5xl and adaptive-cantor: last layer with the final LayerNorm). "
                "stock SDXL: always ComfyUI's SDXL encode. The output always blends with the stock SDXL encode.")}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = ("CLIP Text Encode for SDXL with a Lyra-XL CLIP+T5 fusion: use it for positive and negative. Long "
                   "prompts: the first 77 tokens go through Lyra, the rest stay plain CLIP. Pooled output unchanged.")

    def encode(self, clip, t5, lyra, text, mode="mean", seed=0, strength=1.0, clip_layer="auto"):
        model = lyra_model.module_of(lyra)
        if not lyra_model.is_xl(model):
            raise LyraInputError("lyra is Lyra v1 for SD1.5 (CLIP-L + t5-base), not an SDXL Lyra. Use Lyra Encode "
                                 "(CLIP-L + T5) with an SD1.5 model, or load an SDXL Lyra (e.g. "
                                 "AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious).")
        spec = model.spec
        lyra_model.check_draw(mode, strength)
        t5_width = spec.modality_dims[spec.t5_names[0]]
        lyra_xl_inputs.check_clip(clip)
        lyra_xl_inputs.check_t5(t5, t5_width)
        layer = lyra_xl_inputs.resolve_clip_layer(clip_layer, spec.clip_layer)
        conditioning = lyra_xl_inputs.clip_conditioning(clip, text, CLIP_PENULTIMATE)  # the stock SDXL encode
        if float(strength) == 0.0:
            return (conditioning,)
        sources = conditioning if layer == CLIP_PENULTIMATE else lyra_xl_inputs.clip_conditioning(clip, text, layer)
        states = lyra_xl_inputs.t5_states(t5, text, spec.t5_tokens)
        lyra_xl_inputs.check_t5_width(states, t5_width)
        vae = lyra_model.ready(lyra)
        log.debug("Lyra Encode SDXL: %s, CLIP %s, T5 %d tokens", spec.kind, layer, states.shape[1])
        out = [[transform_sdxl_conditioning(vae, cond, states, mode, seed, strength, lyra_input=source), dict(extra)]
               for (cond, extra), (source, _) in zip(conditioning, sources)]
        return (out,)
