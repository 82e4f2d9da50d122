"""Applying Lyra's reconstruction to SD1.5 conditioning (docs/reference.md §3, "Inference"; strength and
long-prompt handling are the pack's choices).

Two decisions of this pack, documented here and in the README:

* **Strength blend** — ``out = clip + s·(recon − clip)``. ``s = 0`` returns the
  CLIP conditioning object itself (bit-for-bit), ``s = 1`` returns the
  reconstruction's values exactly (what the author feeds the UNet).
* **Long prompts** — ComfyUI encodes a prompt longer than 77 tokens as
  ``k`` CLIP chunks, conditioning ``[B, 77·k, 768]``, while Lyra pairs one
  77-token CLIP window with one 77-token T5 sequence. We transform **chunk 0
  only** (the first 77 tokens, which carry the start token and the prompt's
  beginning, matching the author who always truncates to 77) and pass the
  remaining chunks through unchanged, so nothing the user wrote is dropped
  and the extra chunks behave as in stock ComfyUI.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable

import torch

from .errors import LyraInputError

if TYPE_CHECKING:
    from .model import LyraVAE

logger = logging.getLogger("lune.lyra")

__all__ = ["blend", "transform_chunks", "transform_conditioning"]


def blend(clip: torch.Tensor, recon: torch.Tensor, strength: float) -> torch.Tensor:
    """``clip + strength·(recon − clip)`` in ``clip``'s dtype and device.

    ``strength == 0`` returns ``clip`` itself; ``strength == 1`` returns
    ``recon`` (cast to ``clip``'s dtype/device, the same object when they
    already match). Other values are computed in fp32 (values outside [0, 1]
    extrapolate).
    """
    s = float(strength)
    if not math.isfinite(s):
        raise LyraInputError(f"strength must be a finite number, got {strength!r}.")
    if clip.shape != recon.shape:
        raise LyraInputError(
            f"cannot blend: CLIP conditioning is {list(clip.shape)} but the Lyra reconstruction is {list(recon.shape)}."
        )
    if s == 0.0:
        return clip
    if s == 1.0:
        return recon.to(device=clip.device, dtype=clip.dtype)
    c = clip.to(torch.float32)
    r = recon.to(device=clip.device, dtype=torch.float32)
    return (c + s * (r - c)).to(clip.dtype)


def transform_chunks(
    clip_cond: torch.Tensor,
    t5: torch.Tensor,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunk: int = 77,
) -> torch.Tensor:
    """Apply ``fn(clip_chunk0, t5)`` to the first ``chunk`` CLIP tokens; keep the rest.

    ``clip_cond`` is ``[B, chunk·k, D]`` (ComfyUI SD1.5 conditioning), ``t5`` is
    ``[B, chunk, D_t5]``; ``fn`` must return ``[B, chunk, D]``. The result has
    ``clip_cond``'s shape, dtype and device: ``cat([fn(...), clip_cond[:, chunk:]])``.
    See the module docstring for why only chunk 0 goes through Lyra.
    """
    if clip_cond.dim() != 3:
        raise LyraInputError(f"CLIP conditioning must be [batch, tokens, width], got {list(clip_cond.shape)}.")
    total = clip_cond.shape[1]
    if total < chunk:
        raise LyraInputError(f"CLIP conditioning has {total} tokens; expected at least one {chunk}-token chunk.")
    if total % chunk:
        logger.debug(
            "CLIP conditioning has %d tokens, not a multiple of %d; transforming the first %d", total, chunk, chunk
        )
    head = clip_cond[:, :chunk]
    out = fn(head, t5)
    if tuple(out.shape) != tuple(head.shape):
        raise LyraInputError(f"chunk transform returned {list(out.shape)}, expected {list(head.shape)}.")
    out = out.to(device=clip_cond.device, dtype=clip_cond.dtype)
    if total == chunk:
        return out
    if total > chunk:
        logger.debug("long prompt: Lyra transforms chunk 0 of %d; the rest pass through", math.ceil(total / chunk))
    return torch.cat([out, clip_cond[:, chunk:]], dim=1)


def transform_conditioning(
    vae: "LyraVAE",
    clip_cond: torch.Tensor,
    t5_hidden: torch.Tensor,
    mode: str = "mean",
    seed: int = 0,
    strength: float = 1.0,
) -> torch.Tensor:
    """SD1.5 conditioning through Lyra: ``blend(clip77, vae.reconstruct_modality({clip77, t5}, "clip"), strength)``
    on chunk 0 of ``clip_cond`` ``[B, 77·k, 768]`` (:func:`transform_chunks`), later chunks unchanged.

    ``t5_hidden`` is ``[1 or B, 77, 768]`` (one prompt's T5 states shared by a batch of CLIP rows). Lyra runs in
    the module's device and dtype (fp32) without autograd; ``mode="sample"`` draws from a CPU generator seeded with
    ``seed``, so a seed gives the same result on every device. The result has ``clip_cond``'s shape, dtype and
    device (author's inference: lattice_vocabulary ``trainers/vae/lyra_inference.py`` feeds
    ``reconstructions["clip"]`` to the UNet; the strength blend and chunk policy are this pack's, see above).
    """
    param = next(vae.parameters())
    generator = torch.Generator(device="cpu").manual_seed(int(seed)) if mode == "sample" else None

    def chunk0(clip77: torch.Tensor, t5_77: torch.Tensor) -> torch.Tensor:
        if t5_77.shape[0] == 1 and clip77.shape[0] > 1:
            t5_77 = t5_77.expand(clip77.shape[0], -1, -1)
        inputs = {"clip": clip77.to(device=param.device, dtype=param.dtype),
                  "t5": t5_77.to(device=param.device, dtype=param.dtype)}
        with torch.no_grad():
            recon = vae.reconstruct_modality(inputs, "clip", mode, generator)
        return blend(clip77, recon, strength)

    return transform_chunks(clip_cond, t5_hidden, chunk0, chunk=vae.config.seq_len)
