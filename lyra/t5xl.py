"""flan-t5-xl encoder weights: key selection and the T5 v1.1 configuration read from the shapes (docs/reference.md,
"Lyra-XL", T5).

flan-t5-xl (huggingface.co/google/flan-t5-xl ``config.json``) is T5 v1.1: d_model 2048, d_ff 5120, 24 blocks,
32 heads × d_kv 64, gated GELU (``feed_forward_proj`` ``gated-gelu``, tanh approximation: ``dense_act_fn``
``gelu_new``), relative attention bias (32 buckets, max distance 128) in block 0 only, vocab 32128, RMS norm eps 1e-6,
no biases. Keys (Hugging Face ``T5EncoderModel``; a full seq2seq file adds ``decoder.*`` and ``lm_head.weight``)::

    shared.weight [32128, 2048]                      (encoder.embed_tokens.weight: the same tensor, tied)
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight [2048, 2048]
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [32, 32]
    encoder.block.{i}.layer.0.layer_norm.weight [2048]
    encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1}.weight [5120, 2048], .wo.weight [2048, 5120]
    encoder.block.{i}.layer.1.layer_norm.weight [2048]
    encoder.final_layer_norm.weight [2048]

ComfyUI's stock ``CLIPLoader`` takes such a file for AuraFlow's Pile-T5-XL (umT5 layout: a relative bias in every
block, another tokenizer): that is why the pack loads flan-t5-xl itself, into ComfyUI's own ``T5`` module.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from .errors import LyraCheckpointError

__all__ = ["FLAN_T5_XL", "encoder_state", "t5_v11_config"]

#: The flan-t5-xl configuration, in the keys ComfyUI's ``comfy.text_encoders.t5.T5`` reads.
FLAN_T5_XL = {"d_ff": 5120, "d_kv": 64, "d_model": 2048, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
              "model_type": "t5", "num_heads": 32, "num_layers": 24, "vocab_size": 32128}
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
_BIAS = "layer.0.SelfAttention.relative_attention_bias.weight"
_FIX = ("Use the flan-t5-xl text encoder (e.g. QQGYLab/ELLA models--google--flan-t5-xl--text_encoder/"
        "model.safetensors, or google/flan-t5-xl) in models/text_encoders.")


def encoder_state(state: Mapping[str, torch.Tensor], path: str = "file") -> dict[str, torch.Tensor]:
    """The encoder tensors under ComfyUI's T5 names (``shared.weight``, ``encoder.*``); decoder and LM head
    dropped; ``encoder.embed_tokens.weight`` used as ``shared.weight`` when that is absent."""
    out = {k: v for k, v in state.items() if k.startswith("encoder.") and k != "encoder.embed_tokens.weight"}
    shared = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if shared is None or not out:
        raise LyraCheckpointError(f"{path} has no T5 encoder weights (shared.weight, encoder.block.*). {_FIX}")
    out["shared.weight"] = shared
    return out


def t5_v11_config(state: Mapping[str, torch.Tensor], path: str = "file") -> dict:
    """The T5 v1.1 configuration of an encoder state dict (sizes from the shapes), refusing other T5 families."""
    blocks = sorted({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise LyraCheckpointError(f"{path}: encoder blocks {blocks[:5]}… are not numbered 0..N−1. {_FIX}")
    biased = [b for b in blocks if f"encoder.block.{b}.{_BIAS}" in state]
    if biased != [0]:
        raise LyraCheckpointError(
            f"{path} has a relative attention bias in blocks {biased[:4]}{'…' if len(biased) > 4 else ''}: that is "
            f"an umT5 / Pile-T5 layout (AuraFlow), not flan-t5-xl (bias in block 0 only). {_FIX}")
    ff = "encoder.block.0.layer.1.DenseReluDense."
    if ff + "wi_0.weight" not in state:
        raise LyraCheckpointError(
            f"{path} is an original T5 (one ReLU feed-forward, e.g. t5-base), not T5 v1.1 / flan-t5 (gated GELU). "
            f"For Lyra v1's t5-base use CLIPLoader type stable_audio. {_FIX}")
    shared = state["shared.weight"]
    heads = int(state[f"encoder.block.0.{_BIAS}"].shape[1])
    inner = int(state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0])
    if inner % heads:
        raise LyraCheckpointError(f"{path}: attention width {inner} is not a multiple of {heads} heads. {_FIX}")
    return {"d_ff": int(state[ff + "wi_0.weight"].shape[0]), "d_kv": inner // heads, "d_model": int(shared.shape[1]),
            "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "model_type": "t5", "num_heads": heads,
            "num_layers": len(blocks), "vocab_size": int(shared.shape[0])}


def expected_keys(config: Mapping[str, int]) -> set[str]:
    """Every key ComfyUI's T5 module has for ``config`` (gated, bias in block 0)."""
    keys = {"shared.weight", "encoder.final_layer_norm.weight", f"encoder.block.0.{_BIAS}"}
    for i in range(config["num_layers"]):
        p = f"encoder.block.{i}.layer."
        keys |= {p + f"0.SelfAttention.{n}.weight" for n in "qkvo"}
        keys |= {p + "0.layer_norm.weight", p + "1.layer_norm.weight"}
        keys |= {p + f"1.DenseReluDense.{n}.weight" for n in ("wi_0", "wi_1", "wo")}
    return keys
