"""Lyra Encode SDXL's inputs: socket checks, the SDXL CLIP encode at the layer the model was trained on, and the
flan-t5-xl states as the author computes them (docs/reference.md, "Lyra-XL").

* CLIP: ``penultimate`` is ComfyUI's stock SDXL encode (CLIP-L and CLIP-G layer −2, no final LayerNorm; what the
  Illustrious model saw: its trainer's ``clip_skip=2``). ``last`` is the final layer after the final LayerNorm
  (Hugging Face ``last_hidden_state``; what vae-lyra-sdxl-t5xl and vae-lyra-xl-adaptive-cantor saw): a clone of the
  CLIP with a layer index beyond both encoders' depth, which ComfyUI's ``SDClipModel.set_clip_options`` maps to its
  ``"last"`` output (the final LayerNorm's). The pooled output is the same either way (ComfyUI computes it from the
  final-normed last layer).
* T5: the author tokenises with ``padding="max_length", truncation=True`` to 77 (v1-xl) or 512 (v2) and passes
  the attention mask. Here the ids are the prompt (weights syntax removed) + ``</s>``, cut to that length (the last
  kept slot is ``</s>``) and padded to at least 77 with the mask on; padding further to 512 changes nothing at
  positions 0..76, the only ones that reach the CLIP reconstructions (pads are masked keys and T5's relative bias
  depends only on distances).
"""
from __future__ import annotations

import numbers

import torch

from ..lyra import LyraInputError, pad_or_truncate_ids, strip_prompt_weighting
from ..lyra.xl_spec import CLIP_LAST, CLIP_PENULTIMATE
from . import lyra_inputs
from .lyra_t5xl import T5XL_NAME

CLIP_FIX = "Connect the CLIP of an SDXL checkpoint (Load Checkpoint) to clip."
T5_FIX = "Load flan-t5-xl with 'Load Lyra T5-XL (flan-t5-xl)' and connect it to t5."
#: ComfyUI's index of the last transformer block (CLIP Set Last Layer −1): its output without the final LayerNorm
#: (SDXL's CLIP-L and CLIP-G are built with ``layer_norm_hidden_state=False``).
LAST_BLOCK = -1
CLIP_L_WIDTH = 768
CLIP_LAYERS = ("auto", "stock SDXL (penultimate)", "last (final LayerNorm)")


def check_clip(clip) -> None:
    lyra_inputs.require_encoders(clip, "clip", ["g", "l"], "Lyra Encode SDXL needs SDXL's CLIP-L + CLIP-G",
                                 " (the model file has no CLIP)",
                                 f"{CLIP_FIX} For SD1.5 use Lyra Encode (CLIP-L + T5).")


def check_t5(t5, width: int) -> None:
    if t5 is not None and lyra_inputs._encoder_names(t5) == ["pile_t5xl"]:
        raise LyraInputError("t5 was loaded by the stock Load CLIP, which reads flan-t5-xl as AuraFlow's Pile-T5 "
                             f"(another tokenizer, relative bias missing in 23 blocks). {T5_FIX}")
    lyra_inputs.require_encoders(t5, "t5", [T5XL_NAME], f"this Lyra needs flan-t5-xl ({width} wide)", "", T5_FIX)


def resolve_clip_layer(choice: str, trained_on: str) -> str:
    if choice == CLIP_LAYERS[0]:
        return trained_on
    if choice == CLIP_LAYERS[1]:
        return CLIP_PENULTIMATE
    if choice == CLIP_LAYERS[2]:
        return CLIP_LAST
    raise LyraInputError(f"clip_layer must be one of {list(CLIP_LAYERS)}, got {choice!r}.")


def clip_conditioning(clip, text: str, layer: str) -> list:
    """SDXL conditioning ``[[cond [B, 77·k, 2048], {"pooled_output": [B, 1280], ...}], ...]`` at ``layer``.

    ``last`` = the last block's output after each encoder's own final LayerNorm (Hugging Face ``last_hidden_state``,
    what vae-lyra-sdxl-t5xl and vae-lyra-xl-adaptive-cantor were trained on): ComfyUI's last block (CLIP Set Last
    Layer −1), then ``final_layer_norm`` of CLIP-L on the first 768 channels and of CLIP-G on the other 1280. (A
    layer index beyond the last block, ComfyUI's own "final LayerNorm" switch, is reset to the penultimate layer by
    the next ``set_clip_options`` call in ComfyUI 0.28, so the norm is applied here.) Prompt weights, which ComfyUI
    applies to the block output, therefore act before the norm."""
    if layer != CLIP_LAST:
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))
    last = clip.clone()
    last.clip_layer(LAST_BLOCK)
    out = last.encode_from_tokens_scheduled(last.tokenize(text))
    model = clip.cond_stage_model
    norms = [(model.clip_l.transformer.text_model.final_layer_norm, slice(0, CLIP_L_WIDTH)),
             (model.clip_g.transformer.text_model.final_layer_norm, slice(CLIP_L_WIDTH, None))]
    normed = []
    for cond, extra in out:
        parts = []
        for norm, channels in norms:
            weight, bias = norm.weight.float(), norm.bias.float()
            x = cond[..., channels].float()
            parts.append(torch.nn.functional.layer_norm(x, x.shape[-1:], weight.to(x.device), bias.to(x.device),
                                                        norm.eps).to(cond.dtype))
        normed.append([torch.cat(parts, dim=-1), extra])
    return normed


def t5_ids(t5, text: str, length: int) -> list[int]:
    """flan-t5-xl ids: prompt + ``</s>`` (1), cut to ``length`` with ``</s>`` last, right-padded with 0 to ≥ 77."""
    batches = t5.tokenize(strip_prompt_weighting(text), disable_weights=True)[T5XL_NAME]
    ids = [int(t) for batch in batches for t, *_ in batch if isinstance(t, numbers.Integral)]
    ids = ids[: ids.index(1) + 1] if 1 in ids else [i for i in ids if i != 0] + [1]
    if len(ids) > length:
        ids = pad_or_truncate_ids(ids, length, pad_id=0, eos_id=1)
    return pad_or_truncate_ids(ids, max(77, len(ids)), pad_id=0)


def t5_states(t5, text: str, length: int) -> torch.Tensor:
    """``[1, max(77, n), width]`` fp32: flan-t5-xl last layer with the final RMS norm, attention-masked, pads kept."""
    ids = t5_ids(t5, text, length)
    out = t5.encode_from_tokens({T5XL_NAME: [[(i, 1.0) for i in ids]]})
    return out.float()


def check_t5_width(states: torch.Tensor, width: int) -> None:
    if states.shape[-1] != width:
        raise LyraInputError(f"the T5 output is {states.shape[-1]} wide; this Lyra expects flan-t5-xl ({width}). "
                             f"{T5_FIX}")
