"""Applying Lyra-XL to SDXL conditioning (the author's inference: AbstractEyes/mm-lyra ``nodes.py``,
comfy-clip-shunts ``multiencoders/nodes.py``; strength and long prompts are this pack's choices, as for SD1.5).

SDXL conditioning from ComfyUI is ``[B, 77·k, 2048]`` = ``cat(CLIP-L 768, CLIP-G 1280)`` per token, plus the
pooled CLIP-G vector (1280). For chunk 0 (the first 77 tokens)::

    clip_l, clip_g = x[..., :768], x[..., 768:]      x = the CLIP states the model was trained on (lyra_input)
    recon_l, recon_g = Lyra-XL(clip_l, clip_g, flan-t5-xl states)        (z = mu, or sampled from a seed)
    out = cond + s·(cat(recon_l, recon_g) − cond)   cond = the stock SDXL encode (s = 1: the author's; 0: cond)

Chunks 1..k−1 pass through unchanged (the author drops them; dropping text the user wrote is not this pack's
default). The pooled output is never touched (the author keeps the original pooled).
"""
from __future__ import annotations

import torch

from .errors import LyraInputError
from .fusion_apply import blend, transform_chunks
from .xl_model import CLIP_TOKENS, LyraXL

__all__ = ["transform_sdxl_conditioning"]


def transform_sdxl_conditioning(model: LyraXL, cond: torch.Tensor, t5_states: torch.Tensor, mode: str = "mean",
                                seed: int = 0, strength: float = 1.0,
                                lyra_input: torch.Tensor | None = None) -> torch.Tensor:
    """SDXL conditioning ``[B, 77·k, 2048]`` with chunk 0 replaced by the blended Lyra-XL reconstruction.

    ``t5_states`` is ``[1 or B, ≥77, 2048]``. ``lyra_input`` (default: ``cond``) is the CLIP encode Lyra reads, when
    the model was trained on other CLIP states than ``cond`` holds (e.g. the final layer with its LayerNorm, while
    ``cond`` is the stock SDXL encode the output blends with and passes through); only its first 77 tokens are used.
    Lyra runs in its own device and dtype without autograd; the result has ``cond``'s shape, dtype and device.
    ``mode="sample"`` draws ε from a CPU generator seeded with ``seed``.
    """
    if float(strength) == 0.0:
        return cond  # plain SDXL conditioning, bit for bit
    param = next(model.parameters())
    generator = torch.Generator(device="cpu").manual_seed(int(seed)) if mode == "sample" else None
    split = model.spec.modality_dims["clip_l"]  # 768: SDXL conditioning is cat(CLIP-L, CLIP-G) per token

    source = cond if lyra_input is None else lyra_input
    if source.shape[0] != cond.shape[0] or source.shape[-1] != cond.shape[-1] or source.shape[1] < CLIP_TOKENS:
        raise LyraInputError(f"Lyra's CLIP input {list(source.shape)} does not match the conditioning "
                             f"{list(cond.shape)}.")

    def chunk0(head: torch.Tensor, t5: torch.Tensor) -> torch.Tensor:
        if t5.shape[0] == 1 and head.shape[0] > 1:
            t5 = t5.expand(head.shape[0], -1, -1)
        h = source[:, :CLIP_TOKENS].to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            recon_l, recon_g = model.reconstruct_clip(h[..., :split], h[..., split:], t5, mode,
                                                      generator)
        return blend(head, torch.cat([recon_l, recon_g], dim=-1), strength)

    return transform_chunks(cond, t5_states, chunk0, chunk=CLIP_TOKENS)
