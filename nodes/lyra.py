"""Lyra nodes: Load Lyra (CLIP+T5 fusion) → LYRA, and Lyra Encode (CLIP-L + T5) → SD1.5 CONDITIONING (SPEC §2).

Lyra Encode, step by step (author's inference: lattice_vocabulary ``trainers/vae/lyra_inference.py``):

1. CLIP: exactly what CLIPTextEncode does (``clip.tokenize`` + ``clip.encode_from_tokens_scheduled``): SD1.5 CLIP-L
   last hidden state with the final LayerNorm, ``[B, 77·k, 768]``, plus ``pooled_output``.
2. T5: prompt-weighting syntax removed (``lyra.strip_prompt_weighting``), tokenised by the connected t5-base
   (ComfyUI ``sa_t5``, weights disabled so literal ``(`` survive), ids cut at the end token, then fitted to exactly
   77 (``pad_or_truncate_ids``: longer → 76 tokens + ``</s>``, shorter → right-padded with 0) — the Hugging Face
   ``tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`` the author uses. Encoded with the
   attention mask (keys after ``</s>`` masked) and **without** ComfyUI's zeroing of padded positions: the author
   feeds ``T5EncoderModel(**tokens).last_hidden_state`` whose pad positions are real (non-zero) hidden states.
   ComfyUI's own T5 encode pads to 128 and zeroes pads, so this node calls the T5's own token embedding and
   transformer (what ``SDClipModel.forward`` does, minus the zeroing) → ``[1, 77, 768]`` fp32.
3. Lyra (fp32, on its device): chunk 0 of the CLIP conditioning (first 77 tokens) with the T5 states →
   ``reconstruct(mode)["clip"]``; later chunks of a long prompt pass through unchanged (``transform_chunks``).
4. ``out = clip + strength·(recon − clip)`` (``blend``): 1 = the author's behaviour, 0 = plain CLIP, bit for bit.
   Returned in the CLIP output's dtype and device.
"""
from __future__ import annotations

import logging
import numbers
import os

import torch

import comfy.model_management
import comfy.utils
import folder_paths

from ..lune import hub
from ..lyra import (
    LyraCheckpointError,
    LyraInputError,
    LyraVAE,
    blend,
    load_lyra,
    pad_or_truncate_ids,
    strip_prompt_weighting,
    transform_chunks,
)
from . import paths

log = logging.getLogger("lune.lyra")

LYRA_TYPE = "LYRA"
HF_REPO = "AbstractPhil/vae-lyra"
HF_FILES = ("config.json", "model.pt")
DOWNLOAD_ENTRY = f"{paths.DOWNLOAD_PREFIX}{HF_REPO}"
DEVICE_DEFAULT = "default"
DEVICES = (DEVICE_DEFAULT, "cpu")
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt", ".bin")

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
}


# ------------------------------------------------------------------------------------------------ files

def lyra_choices() -> list[str]:
    """Weight files in models/lyra (config.json beside them), then the Hugging Face download entry."""
    names = [n for n in folder_paths.get_filename_list(paths.LYRA_FOLDER) if n.lower().endswith(WEIGHT_SUFFIXES)]
    return names + [DOWNLOAD_ENTRY]


def download_dir() -> str:
    """models/lyra/AbstractPhil_vae-lyra/ (listed as a normal entry once downloaded)."""
    return os.path.join(folder_paths.models_dir, paths.LYRA_FOLDER, HF_REPO.replace("/", "_"))


def _download() -> tuple[str, str]:
    """(model.pt, config.json) from models/lyra, the HF cache, or a download with a ComfyUI progress bar."""
    bar = comfy.utils.ProgressBar(100)
    local = download_dir()
    config = hub.fetch(HF_REPO, "config.json", local)
    weights = hub.fetch(HF_REPO, "model.pt", local,
                        progress=lambda done, total: bar.update_absolute(int(100 * done / max(total, 1)), 100))
    bar.update_absolute(100, 100)
    return weights, config


def resolve_lyra(lyra_name: str) -> tuple[str, str | None]:
    """(weights path, explicit config path or None = the loader looks beside the weights)."""
    if lyra_name == DOWNLOAD_ENTRY:
        return _download()
    path = folder_paths.get_full_path(paths.LYRA_FOLDER, lyra_name)
    if path is None or not os.path.isfile(path):
        raise LyraCheckpointError(
            f"Lyra file {lyra_name!r} was not found in models/lyra. Put model.pt (or a .safetensors) with its "
            f"config.json in models/lyra/<folder>/ and refresh the node list (press R), or pick {DOWNLOAD_ENTRY!r}.")
    return path, None


def _stamp(lyra_name: str) -> str:
    """mtime/size of the weights and the config beside them: a replaced file changes the stamp."""
    if lyra_name == DOWNLOAD_ENTRY:
        files = [os.path.join(download_dir(), f) for f in HF_FILES]
    else:
        path = folder_paths.get_full_path(paths.LYRA_FOLDER, lyra_name)
        if path is None:
            return lyra_name
        stem = os.path.splitext(path)[0]
        files = [path, stem + ".json", os.path.join(os.path.dirname(path), "config.json")]
    parts = []
    for f in dict.fromkeys(files):
        if os.path.exists(f):
            st = os.stat(f)
            parts.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts) or lyra_name


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


def check_clip(clip) -> None:
    """The clip input must be SD1.5 CLIP-L (one encoder named ``l``); warn about clip-skip."""
    if clip is None:
        raise LyraInputError(f"clip is empty (the model file has no CLIP). {CLIP_FIX}")
    names = _encoder_names(clip)
    if names != ["l"]:
        raise LyraInputError(f"clip is {_describe(names)}, but Lyra was trained on SD1.5 CLIP-L (768 wide). {CLIP_FIX}")
    layer_idx = getattr(clip, "layer_idx", None)
    if layer_idx not in (None, -1):
        log.warning("Lyra Encode: clip-skip is active (CLIP Set Last Layer %s); Lyra was trained on the last layer, "
                    "so results are out of distribution. Remove CLIP Set Last Layer (or set it to -1).", layer_idx)


def check_t5(t5) -> None:
    """The t5 input must be ComfyUI's t5-base (``sa_t5``, clip name ``t5base``)."""
    if t5 is None:
        raise LyraInputError(f"t5 is empty. {T5_FIX}")
    names = _encoder_names(t5)
    if names != ["t5base"]:
        raise LyraInputError(f"t5 is {_describe(names)}, but Lyra needs t5-base (768 wide). {T5_FIX}")


def check_lyra(vae) -> LyraVAE:
    if isinstance(vae, LyraVAE):
        return vae
    # the same class imported under another module name (tests, reloads): accept by shape of the API
    if isinstance(vae, torch.nn.Module) and type(vae).__name__ == "LyraVAE" and hasattr(vae, "reconstruct"):
        return vae
    raise LyraInputError(
        f"lyra is a {type(vae).__name__}, not a Lyra model. Connect the LYRA output of 'Load Lyra (CLIP+T5 fusion)'.")


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
    return outputs[0].float().to(comfy.model_management.intermediate_device())


def reconstruct_clip(vae: LyraVAE, inputs: dict, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """``vae.reconstruct(inputs, mode, generator)["clip"]``, bit for bit, without the work SD1.5 never uses:
    the t5 decoder, and ``fc_logvar`` in mean mode (≈ 19 % of Lyra's FLOPs)."""
    if mode == "mean":
        z = vae.fc_mu(vae.encoder(vae.fusion(vae.validate_inputs(inputs))))
    else:
        mu, logvar = vae.encode(inputs)
        z = vae.sample_latent(mu, logvar, generator)
    return vae.decoders["clip"](z)


def lyra_transform(vae: LyraVAE, clip_cond: torch.Tensor, t5_hidden: torch.Tensor, mode: str = "mean",
                   seed: int = 0, strength: float = 1.0) -> torch.Tensor:
    """Lyra on chunk 0 of ``clip_cond`` [B, 77·k, 768] with ``t5_hidden`` [1 or B, 77, 768], blended by strength;
    result in ``clip_cond``'s shape, dtype and device."""
    seq = vae.config.seq_len
    param = next(vae.parameters())
    generator = torch.Generator(device="cpu").manual_seed(int(seed)) if mode == "sample" else None

    def chunk0(clip77: torch.Tensor, t5_77: torch.Tensor) -> torch.Tensor:
        if t5_77.shape[0] == 1 and clip77.shape[0] > 1:
            t5_77 = t5_77.expand(clip77.shape[0], -1, -1)
        inputs = {"clip": clip77.to(device=param.device, dtype=torch.float32),
                  "t5": t5_77.to(device=param.device, dtype=torch.float32)}
        with torch.no_grad():
            recon = reconstruct_clip(vae, inputs, mode, generator)
        return blend(clip77, recon, strength)

    return transform_chunks(clip_cond, t5_hidden, chunk0, chunk=seq)


# ------------------------------------------------------------------------------------------------ nodes

class LyraLoader:
    """Load Lyra v1 (AbstractPhil/vae-lyra): CLIP-L + t5-base Cantor-fusion VAE, fp32."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lyra_name": (lyra_choices(), {"tooltip": (
                    "Lyra weights in models/lyra (model.pt or .safetensors, with the config.json beside them). "
                    f"{DOWNLOAD_ENTRY} fetches model.pt + config.json from Hugging Face into "
                    "models/lyra/AbstractPhil_vae-lyra/ (honours HF_HUB_OFFLINE).")}),
            },
            "optional": {
                "device": (list(DEVICES), {"default": DEVICE_DEFAULT, "tooltip": (
                    "default: ComfyUI's text-encoder device. Lyra is 17 M params and always runs in fp32.")}),
            },
        }

    RETURN_TYPES = (LYRA_TYPE,)
    RETURN_NAMES = ("lyra",)
    FUNCTION = "load"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = "Loads the Lyra CLIP+T5 fusion VAE (AbstractPhil/vae-lyra) for Lyra Encode."

    @classmethod
    def IS_CHANGED(cls, lyra_name, device=DEVICE_DEFAULT):
        return (_stamp(lyra_name), device)

    def load(self, lyra_name, device=DEVICE_DEFAULT):
        weights, config = resolve_lyra(lyra_name)
        target = comfy.model_management.text_encoder_device() if device == DEVICE_DEFAULT else torch.device(device)
        vae = load_lyra(weights, config=config, device=target)
        log.info("Lyra loaded from %s on %s (fp32)", weights, target)
        return (vae,)


class LyraEncode:
    """SD1.5 conditioning from CLIP-L + t5-base fused by Lyra (the author's inference, with a strength blend)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "SD1.5 CLIP-L (from the checkpoint). No clip-skip: Lyra saw the last layer."}),
            "t5": ("CLIP", {"tooltip": "t5-base text encoder: CLIPLoader with type stable_audio."}),
            "lyra": (LYRA_TYPE, {"tooltip": "From Load Lyra (CLIP+T5 fusion)."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": (
                "The prompt. CLIP reads it as usual (weights work); T5 gets it with (word:1.2) syntax and "
                "embedding: references removed, cut to 77 tokens.")}),
            "mode": (["mean", "sample"], {"default": "mean", "tooltip": (
                "mean: z = mu, deterministic. sample: z = mu + sigma·noise from seed (what the author's code "
                "does).")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                             "tooltip": "Noise seed for sample mode (ignored in mean mode)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                "1: Lyra's reconstruction of CLIP (the author's behaviour). 0: plain CLIP conditioning. "
                "Between: clip + strength·(lyra − clip).")}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "Lune/Lyra"
    DESCRIPTION = ("CLIP Text Encode for SD1.5 with the Lyra CLIP+T5 fusion: use it for positive and negative "
                   "(empty text works). Long prompts: the first 77 tokens go through Lyra, the rest stay plain CLIP.")

    def encode(self, clip, t5, lyra, text, mode="mean", seed=0, strength=1.0):
        vae = check_lyra(lyra)
        if mode not in ("mean", "sample"):
            raise LyraInputError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        if not 0.0 <= float(strength) <= 1.0:
            raise LyraInputError(f"strength must be between 0 and 1, got {strength}.")
        check_clip(clip)
        check_t5(t5)
        conditioning = clip_conditioning(clip, text)
        width = vae.config.modality_dims["clip"]
        for cond, _ in conditioning:
            if cond.shape[-1] != width:
                raise LyraInputError(
                    f"the CLIP conditioning is {cond.shape[-1]} wide; Lyra expects SD1.5 CLIP-L ({width}). {CLIP_FIX}")
        if float(strength) == 0.0:
            return (conditioning,)
        t5_hidden = t5_hidden_states(t5, text, vae.config.seq_len)
        t5_width = vae.config.modality_dims["t5"]
        if t5_hidden.shape[-1] != t5_width:
            raise LyraInputError(
                f"the T5 output is {t5_hidden.shape[-1]} wide; Lyra expects t5-base ({t5_width}). {T5_FIX}")
        out = []
        for cond, extra in conditioning:
            out.append([lyra_transform(vae, cond, t5_hidden, mode, seed, strength), dict(extra)])
        return (out,)
