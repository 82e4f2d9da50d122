"""Is this state dict an SD1.5 UNet? Recognise the usual impostors before any model is built.

Works on LDM/ComfyUI-layout UNet keys without prefix (``input_blocks.…``), plus a few foreign layouts.
SD1.5 signature (SPEC §1/§3): 4 latent channels in and out, ``model_channels`` 320, cross-attention
context 768 (``attn2.to_k`` is [·, 768]), no ``label_emb`` (that is SDXL's ADM input).
"""
from __future__ import annotations

from typing import Mapping

from .errors import UnsupportedModelError

_FOREIGN_LAYOUTS = (
    ("double_blocks.", "a Flux transformer", "load it with ComfyUI's Load Diffusion Model and a Flux workflow"),
    ("joint_blocks.", "an SD3 MMDiT", "load it with ComfyUI's stock Load Checkpoint and an SD3 workflow"),
    ("x_embedder.", "a DiT-style transformer (SD3/PixArt/Flux family)", "use the loader made for that model"),
    ("img_in.", "a Flux-style transformer", "load it with ComfyUI's Load Diffusion Model"),
    ("conditioner.embedders.", "an SDXL checkpoint (two text encoders)", "load it with the stock Load Checkpoint"),
    ("fusion.modality_projections.", "a Lyra CLIP+T5 fusion VAE (AbstractPhil/vae-lyra)",
     "put it in models/lyra and load it with Load Lyra (CLIP+T5 fusion)"),
)


def _shape(sd: Mapping, key: str):
    t = sd.get(key)
    return None if t is None else tuple(t.shape)


def check_sd15_unet(sd: Mapping, source: str) -> None:
    """Raise UnsupportedModelError naming the architecture found when ``sd`` is not an SD1.5 UNet."""
    keys = list(sd.keys())
    for prefix, what, fix in _FOREIGN_LAYOUTS:
        if any(k.startswith(prefix) for k in keys):
            raise UnsupportedModelError(f"{source} looks like {what} (keys '{prefix}…'), not an SD1.5 UNet. "
                                        f"Lune is SD1.5-based; {fix}.")
    conv_in = _shape(sd, "input_blocks.0.0.weight")
    if conv_in is None:
        raise UnsupportedModelError(f"{source} has no UNet input convolution ('input_blocks.0.0.weight'); "
                                    "it is not an SD1.5 UNet. Pick a Lune/SD1.5 checkpoint.")
    if any(k.startswith("label_emb.") for k in keys):
        raise UnsupportedModelError(f"{source} is an SDXL UNet (it has 'label_emb', SDXL's size/crop conditioning). "
                                    "Lune is SD1.5-based: load SDXL models with the stock Load Checkpoint.")
    contexts = {tuple(sd[k].shape)[1] for k in keys if k.endswith("attn2.to_k.weight")}
    if contexts and contexts != {768}:
        width = max(contexts)
        family = {1024: "an SD2.x UNet", 2048: "an SDXL UNet"}.get(width, f"a UNet with {width}-wide cross-attention")
        raise UnsupportedModelError(f"{source} is {family} (text context {width}, SD1.5 uses 768). "
                                    "Lune needs an SD1.5-architecture model; load this one with the stock loaders.")
    channels, in_ch = conv_in[0], conv_in[1]
    if in_ch == 9:
        raise UnsupportedModelError(f"{source} is an SD1.5 inpainting UNet (9 input channels). Lune is a 4-channel "
                                    "text-to-image model; use the inpainting model with the stock loaders.")
    if in_ch != 4 or channels != 320:
        raise UnsupportedModelError(f"{source} has a {in_ch}-channel, {channels}-wide UNet input; SD1.5/Lune has "
                                    "4 latent channels and 320 model channels. Pick a Lune/SD1.5 checkpoint.")
    out = _shape(sd, "out.2.weight")
    if out is not None and out[0] != 4:
        raise UnsupportedModelError(f"{source} predicts {out[0]} latent channels; SD1.5/Lune predicts 4.")
    if any(len(sd[k].shape) == 2 for k in keys if k.endswith(".proj_in.weight")):
        raise UnsupportedModelError(f"{source} uses linear transformer projections (SD2.x style), not SD1.5's "
                                    "convolutions. Load it with the stock loaders.")
