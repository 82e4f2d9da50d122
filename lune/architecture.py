"""Is this state dict a complete SD1.5 UNet? Recognise the usual impostors before any model is built.

A UNet-only file names its tensors in one of two layouts, told apart by key names:

* ``ldm``: the CompVis ``openaimodel.UNetModel`` names ComfyUI keeps (``input_blocks.0.0.weight``,
  ``output_blocks.*``) — single-file checkpoints after ``model.diffusion_model.``;
* ``diffusers``: diffusers ``UNet2DConditionModel`` names (``conv_in.weight``, ``down_blocks.*``) — diffusers
  folders, the Lune training state's ``student`` and bare diffusers-key files. ComfyUI renames these itself
  (``comfy.utils.unet_to_diffusers``) but only for full-size models from its own list.

SD1.5 signature (model card of runwayml/stable-diffusion-v1-5; diffusers ``unet/config.json``): 4 latent channels
in and out, 320 model channels, cross-attention context 768 (``attn2.to_k`` is [·, 768]), 1×1-convolution
transformer projections, no ADM/class embedding (SDXL's ``label_emb`` / ``add_embedding``).

Completeness is checked here because ComfyUI's ``load_state_dict(strict=False)`` only logs missing tensors and
then runs with uninitialised weights: every module a file starts must hold all of its tensors, nothing unknown may
ride along in diffusers names, and a diffusers SD1.5 UNet has exactly 686 tensors.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Mapping

from .errors import LuneFormatError, UnsupportedModelError

log = logging.getLogger("lune")

LDM = "ldm"
DIFFUSERS = "diffusers"
SD15_UNET_TENSORS = 686

_FOREIGN_LAYOUTS = (
    ("double_blocks.", "a Flux transformer", "load it with ComfyUI's Load Diffusion Model and a Flux workflow"),
    ("joint_blocks.", "an SD3 MMDiT", "load it with ComfyUI's stock Load Checkpoint and an SD3 workflow"),
    ("x_embedder.", "a DiT-style transformer (SD3/PixArt/Flux family)", "use the loader made for that model"),
    ("img_in.", "a Flux-style transformer", "load it with ComfyUI's Load Diffusion Model"),
    ("conditioner.embedders.", "an SDXL checkpoint (two text encoders)", "load it with the stock Load Checkpoint"),
    ("fusion.modality_projections.", "a Lyra CLIP+T5 fusion VAE (AbstractPhil/vae-lyra)",
     "put it in models/lyra and load it with Load Lyra (CLIP+T5 fusion)"),
    ("class_embedding.", "a class-conditioned UNet (unCLIP / x4 upscaler, 'class_embedding')",
     "load it with the stock loaders"),
    ("encoder_hid_proj.", "a UNet with an image/text projection ('encoder_hid_proj')",
     "load it with the stock loaders"),
)

# Per layout: the input/output convolutions, the ADM input, the top-level modules, a resnet's leaves (its
# time-embedding projection marks it) and its optional 1×1 shortcut.
_NAMES = {
    LDM: {"conv_in": "input_blocks.0.0.weight", "conv_out": "out.2.weight", "adm": "label_emb.",
          "top": ("time_embed.0", "time_embed.2", "input_blocks.0.0", "out.0", "out.2"),
          "resnet": ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3"),
          "resnet_mark": ".emb_layers.1.weight", "shortcut": ".skip_connection."},
    DIFFUSERS: {"conv_in": "conv_in.weight", "conv_out": "conv_out.weight", "adm": "add_embedding.",
                "top": ("time_embedding.linear_1", "time_embedding.linear_2", "conv_in", "conv_norm_out", "conv_out"),
                "resnet": ("norm1", "conv1", "time_emb_proj", "norm2", "conv2"),
                "resnet_mark": ".time_emb_proj.weight", "shortcut": ".conv_shortcut."},
}
# Spatial transformer and its blocks: the same names in both layouts. q/k/v projections carry no bias.
_TRANSFORMER = ("norm", "proj_in", "proj_out")
_BLOCK_BIASED = ("norm1", "norm2", "norm3", "attn1.to_out.0", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_BLOCK_UNBIASED = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_k", "attn2.to_v")
# Down/up-samplers: LDM ``input_blocks.N.0.op`` / ``output_blocks.M.K.conv``, diffusers ``…samplers.0.conv``.
_RESAMPLER = re.compile(r"(\.op|samplers\.0\.conv|_blocks\.\d+\.\d+\.conv)\.(weight|bias)$")


def unet_layout(keys: Iterable[str]) -> str | None:
    """``"ldm"`` or ``"diffusers"`` when ``keys`` (without ``model.diffusion_model.``) name a UNet, else None."""
    keys = keys if isinstance(keys, (set, Mapping)) else set(keys)
    if "input_blocks.0.0.weight" in keys and any(k.startswith("output_blocks.") for k in keys):
        return LDM
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return DIFFUSERS
    return None


def _shape(sd: Mapping, key: str):
    t = sd.get(key)
    return None if t is None else tuple(t.shape)


def check_sd15_unet(sd: Mapping, source: str) -> str:
    """Raise UnsupportedModelError naming the architecture found when ``sd`` is not an SD1.5 UNet; return its
    layout (``ldm`` or ``diffusers``)."""
    keys = list(sd.keys())
    for prefix, what, fix in _FOREIGN_LAYOUTS:
        if any(k.startswith(prefix) for k in keys):
            raise UnsupportedModelError(f"{source} looks like {what} (keys '{prefix}…'), not an SD1.5 UNet. "
                                        f"Lune is SD1.5-based; {fix}.")
    layout = unet_layout(keys)
    if layout is None:
        raise UnsupportedModelError(f"{source} has no SD1.5 UNet input convolution ('input_blocks.0.0.weight' or "
                                    f"diffusers 'conv_in.weight'; first keys: {', '.join(keys[:5])}). It is not an "
                                    "SD1.5 UNet. Pick a Lune/SD1.5 checkpoint in LDM or diffusers layout.")
    names = _NAMES[layout]
    if any(k.startswith((names["adm"], "label_emb.")) for k in keys):
        raise UnsupportedModelError(f"{source} is an SDXL UNet (it has '{names['adm']}', SDXL's size/crop "
                                    "conditioning). Lune is SD1.5-based: load SDXL models with the stock Load "
                                    "Checkpoint.")
    contexts = {tuple(sd[k].shape)[1] for k in keys if k.endswith("attn2.to_k.weight")}
    if contexts and contexts != {768}:
        width = max(contexts)
        family = {1024: "an SD2.x UNet", 2048: "an SDXL UNet"}.get(width, f"a UNet with {width}-wide cross-attention")
        raise UnsupportedModelError(f"{source} is {family} (text context {width}, SD1.5 uses 768). "
                                    "Lune needs an SD1.5-architecture model; load this one with the stock loaders.")
    channels, in_ch = _shape(sd, names["conv_in"])[:2]
    if in_ch == 9:
        raise UnsupportedModelError(f"{source} is an SD1.5 inpainting UNet (9 input channels). Lune is a 4-channel "
                                    "text-to-image model; use the inpainting model with the stock loaders.")
    if in_ch != 4 or channels != 320:
        raise UnsupportedModelError(f"{source} has a {in_ch}-channel, {channels}-wide UNet input; SD1.5/Lune has "
                                    "4 latent channels and 320 model channels. Pick a Lune/SD1.5 checkpoint.")
    out = _shape(sd, names["conv_out"])
    if out is not None and out[0] != 4:
        raise UnsupportedModelError(f"{source} predicts {out[0]} latent channels; SD1.5/Lune predicts 4.")
    if any(len(sd[k].shape) == 2 for k in keys if k.endswith(".proj_in.weight")):
        raise UnsupportedModelError(f"{source} uses linear transformer projections (SD2.x style), not SD1.5's "
                                    "convolutions. Load it with the stock loaders.")
    return layout


def _expected_keys(keys: set[str], layout: str) -> set[str]:
    """Every tensor the modules present in ``keys`` must hold (a module is present when its marker key is)."""
    names = _NAMES[layout]
    modules = list(names["top"])
    for key in keys:
        if key.endswith(names["resnet_mark"]):
            base = key[: -len(names["resnet_mark"])]
            modules += [f"{base}.{leaf}" for leaf in names["resnet"]]
        elif key.endswith(".proj_in.weight"):
            modules += [f"{key[:-len('.proj_in.weight')]}.{leaf}" for leaf in _TRANSFORMER]
        elif key.endswith(".attn1.to_q.weight"):
            base = key[: -len(".attn1.to_q.weight")]
            modules += [f"{base}.{leaf}" for leaf in _BLOCK_BIASED]
        elif names["shortcut"] in key or _RESAMPLER.search(key):
            modules.append(key.rpartition(".")[0])
    expected = {f"{m}.{p}" for m in modules for p in ("weight", "bias")}
    for key in keys:
        if key.endswith(".attn1.to_q.weight"):
            base = key[: -len(".attn1.to_q.weight")]
            expected |= {f"{base}.{leaf}.weight" for leaf in _BLOCK_UNBIASED}
    return expected


def check_complete_unet(sd: Mapping, layout: str, source: str) -> None:
    """Raise LuneFormatError when a module of the UNet lacks tensors, when diffusers-named tensors are unknown,
    or when a diffusers UNet does not hold SD1.5's 686 tensors; unknown LDM-named tensors are only logged
    (ComfyUI ignores them)."""
    keys = set(sd.keys())
    expected = _expected_keys(keys, layout)
    missing, unknown = sorted(expected - keys), sorted(keys - expected)
    if missing:
        raise LuneFormatError(f"{source} is an incomplete UNet: {len(missing)} tensors are missing (e.g. "
                              f"{', '.join(missing[:4])}). The file was saved partially or cut short; download it "
                              "again or re-export the complete UNet.")
    if unknown and layout == DIFFUSERS:
        raise LuneFormatError(f"{source}: {len(unknown)} of {len(keys)} tensors are not part of an SD1.5 UNet "
                              f"(e.g. {', '.join(unknown[:4])}). The file holds extra weights (LoRA, adapters) or "
                              "another model; use a plain SD1.5/Lune UNet.")
    if unknown:
        log.warning("%s: ignoring %d tensors that are not part of an SD1.5 UNet (e.g. %s)",
                    source, len(unknown), ", ".join(unknown[:4]))
    if layout == DIFFUSERS and len(keys) != SD15_UNET_TENSORS:
        raise LuneFormatError(f"{source} holds {len(keys)} diffusers-named UNet tensors; a complete SD1.5 UNet has "
                              f"{SD15_UNET_TENSORS} (ComfyUI converts diffusers names only for full-size models). "
                              "The file is partial; download the complete unet/diffusion_pytorch_model.safetensors.")
