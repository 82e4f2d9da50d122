"""Lyra Encode's text inputs: checks of the CLIP and T5 sockets, and the t5-base states Lyra was trained on.

T5, as the author feeds it (lattice_vocabulary ``trainers/vae/lyra_inference.py``: Hugging Face
``tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`` then
``T5EncoderModel(**tokens).last_hidden_state``): prompt-weighting syntax removed (``lyra.strip_prompt_weighting``),
tokenised by the connected t5-base (ComfyUI ``sa_t5``, weights disabled so literal ``(`` survive), ids cut at the
end token, fitted to exactly 77 (``pad_or_truncate_ids``: longer → 76 tokens + ``</s>``, shorter → right-padded
with 0), encoded with the attention mask (keys after ``</s>`` masked) and **without** ComfyUI's zeroing of padded
positions. ComfyUI's own T5 encode pads to 128 and zeroes pads, so ``t5_hidden_states`` calls the T5's own token
embedding and transformer (what ComfyUI's ``comfy/sd1_clip.py`` ``SDClipModel.forward`` does, minus the zeroing).
"""
from __future__ import annotations

import logging
import numbers

import torch

from ..lyra import LyraInputError, pad_or_truncate_ids, strip_prompt_weighting
from .comfy_internals import intermediate_device

log = logging.getLogger("lune.lyra")

T5_FIX = "Load t5-base with CLIPLoader type stable_audio and connect it to t5."
CLIP_FIX = "Connect the CLIP of an SD1.5 checkpoint (Load Lune Model / Load Checkpoint) to clip."
#: What a text encoder is, from the keys of ``clip.tokenize(...)`` (ComfyUI's clip names).
ENCODER_NAMES = {
    "l": "CLIP-L (SD1.5)",
    "g": "CLIP-G (SDXL)",
    "h": "OpenCLIP-H (SD2.x)",
    "t5base": "t5-base",
    "t5xxl": "T5-XXL (4096 wide, the Flux/SD3 text encoder)",
    "umt5xxl": "UMT5-XXL (4096 wide, Wan)",
    "pile_t5xl": "Pile T5-XL (2048 wide, AuraFlow)",
    "t5xl": "flan-t5-xl (2048 wide, for the SDXL Lyras)",
}


# ------------------------------------------------------------------------------------------------ checks

def _encoder_names(obj) -> list[str]:
    """Clip names of a CLIP object (``"l"`` for SD1.5, ``"g"``+``"l"`` for SDXL, ``"t5base"``, ...)."""
    try:
        tokens = obj.tokenize("")
    except Exception as e:  # not a ComfyUI CLIP at all
        raise LyraInputError(f"the connected object ({type(obj).__name__}) cannot tokenize text ({e}).") from None
    if not isinstance(tokens, dict):
        raise LyraInputError(f"the connected object ({type(obj).__name__}) is not a ComfyUI text encoder.")
    return sorted(tokens)


def _describe(names: list[str]) -> str:
    if names == ["g", "l"]:
        return "an SDXL CLIP (CLIP-L + CLIP-G, conditioning 2048 wide)"
    return " + ".join(ENCODER_NAMES.get(n, repr(n)) for n in names) or "an unknown text encoder"


def require_encoders(obj, input_name: str, expected: list[str], need: str, empty: str, fix: str) -> None:
    """The ``input_name`` input must be a ComfyUI text encoder whose clip names are ``expected``."""
    if obj is None:
        raise LyraInputError(f"{input_name} is empty{empty}. {fix}")
    names = _encoder_names(obj)
    if names != expected:
        raise LyraInputError(f"{input_name} is {_describe(names)}, but {need}. {fix}")


def check_clip(clip) -> None:
    """The clip input must be SD1.5 CLIP-L (one encoder named ``l``); warn about clip-skip."""
    require_encoders(clip, "clip", ["l"], "Lyra was trained on SD1.5 CLIP-L (768 wide)",
                     " (the model file has no CLIP)", CLIP_FIX)
    layer_idx = getattr(clip, "layer_idx", None)
    if layer_idx not in (None, -1):
        log.warning("Lyra Encode: clip-skip is active (CLIP Set Last Layer %s); Lyra was trained on the last layer, "
                    "so results are out of distribution. Remove CLIP Set Last Layer (or set it to -1).", layer_idx)


def check_t5(t5) -> None:
    """The t5 input must be ComfyUI's t5-base (``sa_t5``, clip name ``t5base``)."""
    require_encoders(t5, "t5", ["t5base"], "Lyra needs t5-base (768 wide)", "", T5_FIX)


def check_clip_width(cond: torch.Tensor, want: int) -> None:
    if cond.shape[-1] != want:
        raise LyraInputError(f"the CLIP conditioning is {cond.shape[-1]} wide; Lyra expects SD1.5 CLIP-L ({want}). "
                             f"{CLIP_FIX}")


def check_t5_width(hidden: torch.Tensor, want: int) -> None:
    if hidden.shape[-1] != want:
        raise LyraInputError(f"the T5 output is {hidden.shape[-1]} wide; Lyra expects t5-base ({want}). {T5_FIX}")


# ------------------------------------------------------------------------------------------------ encoders

def clip_conditioning(clip, text: str) -> list:
    """CLIPTextEncode's output for ``text``: ``[[cond [B, 77·k, 768], {"pooled_output": ..., ...}], ...]``."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def t5_token_ids(t5, text: str, length: int = 77) -> list[int]:
    """T5 ids of ``text`` fitted to exactly ``length``: prompt tokens + ``</s>``, right-padded with ``<pad>``;
    a longer prompt keeps ``length − 1`` tokens + ``</s>`` (HF ``padding="max_length", truncation=True``)."""
    tok = getattr(t5.tokenizer, "clip_t5base", None)
    end_id = int(getattr(tok, "end_token", 1) if tok is not None else 1)
    pad_id = int(getattr(tok, "pad_token", 0) if tok is not None else 0)
    batches = t5.tokenize(strip_prompt_weighting(text), disable_weights=True)["t5base"]
    ids = [int(t) for batch in batches for t, *_ in batch if isinstance(t, numbers.Integral)]
    if end_id in ids:
        ids = ids[: ids.index(end_id) + 1]
    else:  # ComfyUI always appends </s>; be safe with other tokenizers
        ids = [i for i in ids if i != pad_id] + [end_id]
    return pad_or_truncate_ids(ids, length, pad_id=pad_id, eos_id=end_id)


def t5_hidden_states(t5, text: str, length: int = 77) -> torch.Tensor:
    """t5-base last hidden state (final RMSNorm) of the 77 ids, attention-masked after ``</s>``, pads NOT zeroed:
    ``[1, length, 768]`` fp32 on ComfyUI's intermediate device."""
    ids = t5_token_ids(t5, text, length)
    stack = t5.cond_stage_model
    encoder = getattr(stack, getattr(stack, "clip", ""), None)
    if encoder is None or not hasattr(encoder, "process_tokens") or not hasattr(encoder, "transformer"):
        log.warning("Lyra Encode: this ComfyUI's T5 has no process_tokens/transformer; using its stock encode, "
                    "whose padded positions are zeroed (the author's are not): results will differ.")
        out = t5.encode_from_tokens({"t5base": [[(i, 1.0) for i in ids]]})
        return out.float()
    t5.load_model()  # ComfyUI model management: weights (and LoRA patches) on the load device
    device = encoder.transformer.get_input_embeddings().weight.device
    embeds, mask, num_tokens, info = encoder.process_tokens([ids], device)
    outputs = encoder.transformer(None, mask, embeds=embeds, num_tokens=num_tokens, intermediate_output=None,
                                  final_layer_norm_intermediate=True, dtype=torch.float32, embeds_info=info)
    return outputs[0].float().to(intermediate_device())
