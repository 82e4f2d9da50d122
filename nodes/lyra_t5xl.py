"""Load Lyra T5-XL: flan-t5-xl as a ComfyUI CLIP object, built from ComfyUI's own T5 classes (docs/reference.md,
"Lyra-XL", T5).

Why not the stock CLIPLoader: it detects a flan-t5-xl file as AuraFlow's Pile-T5-XL (``comfy/sd.py``
``detect_te_model``: 2048 wide → ``PILE_T5XL``), which builds an umT5-style stack (a relative attention bias expected in
every block, so 23 blocks get none) and a tokenizer with other pad/end ids. Here:

* module: ``comfy.text_encoders.t5.T5`` with the T5 v1.1 configuration read from the file's shapes
  (:func:`lyra.t5xl.t5_v11_config`: flan-t5-xl = 24 blocks, 2048 wide, d_ff 5120, 32 heads, gated tanh-GELU, bias in
  block 0), wrapped like ComfyUI's T5-XXL (``sd1_clip.SDClipModel``: last layer with the final RMS norm, attention
  mask on, pads not zeroed);
* tokenizer: ComfyUI's T5 sentencepiece tokenizer (``comfy/text_encoders/t5_tokenizer``, the vocabulary of
  t5-v1.1 and flan-t5), no start token, ``</s>`` = 1, pad = 0, at least 77 tokens;
* a ComfyUI ``CLIP`` (model management, offloading, the stock encode nodes work with it); clip name ``t5xl``.
"""
from __future__ import annotations

import logging
import os

import torch

from ..lune import safe_read
from ..lune.errors import LuneFormatError, UnsafeCheckpointError
from ..lune.stamps import file_stamp
from ..lyra import LyraCheckpointError
from ..lyra.t5xl import FLAN_T5_XL, encoder_state, expected_keys, t5_v11_config
from ..lune.download_rules import FIXED, DownloadEntry
from . import downloads
from .comfy_internals import (
    CLIP,
    CLIP_LOADS_STATE_DICT,
    SD1ClipModel,
    SD1Tokenizer,
    SDClipModel,
    SDTokenizer,
    T5,
    T5TokenizerFast,
    calculate_parameters,
    get_filename_list,
    get_folder_paths,
    get_full_path,
    t5_tokenizer_dir,
)

log = logging.getLogger("lune.lyra")

T5XL_NAME = "t5xl"
TEXT_ENCODERS = "text_encoders"
#: flan-t5-xl encoder only, fp16 (2.95 GB): huggingface.co/QQGYLab/ELLA, folder models--google--flan-t5-xl--text_encoder
T5XL_REPO = "QQGYLab/ELLA"
T5XL_FILES = ("models--google--flan-t5-xl--text_encoder/model.safetensors",)
T5XL_ENTRY = DownloadEntry(T5XL_REPO, TEXT_ENCODERS, FIXED, T5XL_FILES, what="flan-t5-xl encoder (fp16)")
DOWNLOAD_ENTRY = T5XL_ENTRY.label
DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class FlanT5XLEncoder(SDClipModel):
    """ComfyUI's T5 encoder stack with a T5 v1.1 configuration (``t5_config``; default flan-t5-xl)."""

    def __init__(self, device="cpu", dtype=None, model_options={}, t5_config=None, **kwargs):  # noqa: B006 (ComfyUI's signature)
        config = dict(t5_config or FLAN_T5_XL)
        super().__init__(device=device, layer="last", layer_idx=None, textmodel_json_config=config, dtype=dtype,
                         special_tokens={"end": 1, "pad": 0}, model_class=T5, enable_attention_masks=True,
                         zero_out_masked=False, model_options=model_options)


class FlanT5XLTokenizer(SDTokenizer):
    """ComfyUI's T5 tokenizer: no start token, ``</s>`` appended, right-padded with 0 to at least 77 tokens."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006 (ComfyUI's signature)
        super().__init__(t5_tokenizer_dir(), pad_with_end=False, embedding_directory=embedding_directory,
                         embedding_size=2048, embedding_key=T5XL_NAME, tokenizer_class=T5TokenizerFast,
                         has_start_token=False, pad_to_max_length=False, max_length=99999999, min_length=77,
                         tokenizer_data=tokenizer_data)


class FlanT5XLTokenizers(SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006 (ComfyUI's signature)
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, name=T5XL_NAME,
                         tokenizer=FlanT5XLTokenizer)


class FlanT5XLModels(SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):  # noqa: B006 (ComfyUI's signature)
        super().__init__(device=device, dtype=dtype, model_options=model_options, name=T5XL_NAME,
                         clip_model=FlanT5XLEncoder, **kwargs)


class _ClipTarget:
    """What ``comfy.sd.CLIP`` builds from: model class, tokenizer class, extra constructor parameters."""

    def __init__(self, config: dict) -> None:
        self.clip, self.tokenizer, self.params = FlanT5XLModels, FlanT5XLTokenizers, {"t5_config": config}


def read_encoder(path: str) -> tuple[dict, dict]:
    """(encoder tensors under ComfyUI's names, T5 v1.1 config) of a weights file, read weights-only."""
    try:
        raw = safe_read.read_weights_file(path, advice=f"Download it again. {T5XL_HINT}")
        content = raw.content
        if raw.format != safe_read.SAFETENSORS:
            found = safe_read.find_state_dict(content, path, ("model_state_dict", "state_dict", "model"))
            if found is None:
                raise LyraCheckpointError(f"{path} holds no state dict. {T5XL_HINT}")
            content = found[0]
    except UnsafeCheckpointError as exc:
        raise LyraCheckpointError(str(exc)) from None
    except LuneFormatError as exc:
        raise LyraCheckpointError(str(exc)) from None
    state = encoder_state(content, path)
    config = t5_v11_config(state, path)
    missing = sorted(expected_keys(config) - set(state))
    if missing:
        raise LyraCheckpointError(f"{path} lacks T5 tensors {missing[:5]}: the file is incomplete. {T5XL_HINT}")
    return {k: state[k] for k in expected_keys(config)}, config


T5XL_HINT = ("Put the flan-t5-xl encoder (e.g. model.safetensors of QQGYLab/ELLA models--google--flan-t5-xl--"
             f"text_encoder) in models/text_encoders, or pick {DOWNLOAD_ENTRY!r}.")


def build_t5xl(state: dict, config: dict, dtype: torch.dtype | None = None, embedding_directory=None):
    """A ComfyUI CLIP holding flan-t5-xl with ``state`` loaded (keys under ``t5xl.transformer.``)."""
    full = {f"{T5XL_NAME}.transformer.{k}": v for k, v in state.items()}
    options = {} if dtype is None else {"dtype": dtype}
    kwargs = {"embedding_directory": embedding_directory, "parameters": calculate_parameters(full),
              "model_options": options}
    if CLIP_LOADS_STATE_DICT:
        return CLIP(_ClipTarget(config), state_dict=full, **kwargs)
    clip = CLIP(_ClipTarget(config), **kwargs)
    missing, _ = clip.load_sd(full, full_model=True)
    missing = [k for k in missing if k.startswith(f"{T5XL_NAME}.transformer.")]
    if missing:
        raise LyraCheckpointError(f"flan-t5-xl tensors were not loaded: {missing[:5]}. {T5XL_HINT}")
    return clip


# ------------------------------------------------------------------------------------------------ the node

def list_t5() -> list[str]:
    names = [n for n in get_filename_list(TEXT_ENCODERS) if n.lower().endswith((".safetensors", ".sft", ".pt",
                                                                                 ".pth", ".bin"))]
    return names + [DOWNLOAD_ENTRY]


def resolve_t5(name: str) -> str:
    if name == DOWNLOAD_ENTRY:
        return downloads.fetch_entry(T5XL_ENTRY)[0]
    path = get_full_path(TEXT_ENCODERS, name)
    if not path or not os.path.isfile(path):
        raise LyraCheckpointError(f"T5 file {name!r} was not found in models/text_encoders. {T5XL_HINT}")
    return path


class LyraT5XLLoader:
    """Load flan-t5-xl (Lyra-XL's T5) as a CLIP, with ComfyUI's T5 module and tokenizer."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "t5_name": (list_t5(), {"tooltip": (
                "flan-t5-xl encoder weights in models/text_encoders (encoder-only or a full flan-t5-xl file). "
                f"{DOWNLOAD_ENTRY} fetches QQGYLab/ELLA's fp16 encoder (2.95 GB) into "
                "models/text_encoders/QQGYLab_ELLA/ (honours HF_HUB_OFFLINE).")}),
        }, "optional": {
            "dtype": (list(DTYPES), {"default": "default", "tooltip": (
                "default: ComfyUI's text-encoder dtype for the device. fp32 matches the author's reference.")}),
        }}

    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("t5",)
    FUNCTION = "load"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = ("Loads flan-t5-xl for Lyra Encode SDXL. The stock Load CLIP takes this file for AuraFlow's "
                   "Pile-T5 (another tokenizer and layout); use this loader.")

    @classmethod
    def IS_CHANGED(cls, t5_name, dtype="default"):
        if t5_name == DOWNLOAD_ENTRY:
            return (downloads.entry_stamp(T5XL_ENTRY), dtype)
        path = get_full_path(TEXT_ENCODERS, t5_name)
        return (file_stamp(path) if path else t5_name, dtype)

    def load(self, t5_name, dtype="default"):
        path = resolve_t5(t5_name)
        state, config = read_encoder(path)
        if config["d_model"] != FLAN_T5_XL["d_model"]:
            log.warning("Lyra T5-XL: %s is %d wide, not flan-t5-xl's 2048; Lyra-XL will refuse it", path,
                        config["d_model"])
        embeddings = get_folder_paths("embeddings")
        clip = build_t5xl(state, config, DTYPES.get(dtype), embeddings)
        log.info("Lyra T5-XL: loaded %s (%d blocks, %d wide)", path, config["num_layers"], config["d_model"])
        return (clip,)
