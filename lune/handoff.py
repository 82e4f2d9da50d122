"""Pixel-space hand-off of a latent between model families (the size and resize math; no ComfyUI import).

Latents of different model families live in different VAE spaces, even at the same channel count: ComfyUI's
``comfy/latent_formats.py`` gives SD1.5 4 channels at scale 0.18215, SDXL 4 channels at 0.13025, SD3 16 at
1.5305 (shift 0.0609), Flux.1 16 at 0.3611 (shift 0.1159), Flux.2 128. The only exact bridge is the image:

    latent_target = encode_target(resize(decode_source(latent_source), H', W'))

with ``H' = snap(H·scale)``, ``W' = snap(W·scale)`` and ``snap(x) = max(m, m·round(x / m))`` for ``m = 8`` (every
family's VAE downsamples by 8; ``m`` grows to a multiple of the target VAE's own factor when that is larger):
ComfyUI's stock ``VAEDecode`` -> ``ImageScale`` -> ``VAEEncode`` chain in one step, after which the second model
samples at partial denoise. ``resize`` is ``torch.nn.functional.interpolate`` on NCHW images, exactly what
``ImageScale`` does for its interpolate methods (``nodes.py`` ``ImageScale.upscale`` -> ``comfy/utils.py``
``common_upscale`` with crop disabled; at an unchanged size interpolate is the identity, so it is skipped).
Learned converters exist for some pairs (city96/SD-Latent-Interposer), none into Flux; the VAE round trip
works for every pair.
"""
from __future__ import annotations

import math

import torch

DEFAULT_MULTIPLE = 8
RESIZE_METHODS = ("bicubic", "bilinear", "area", "nearest-exact")  # ImageScale's interpolate-based methods
# Latent width -> families whose image VAEs produce it (comfy/latent_formats.py, ComfyUI 0.3.75).
LATENT_FAMILIES = {4: "SD1.5/SDXL", 16: "SD3/Flux.1", 128: "Flux.2"}


def latent_family(channels: int) -> str:
    """A human name for the model families whose latents have ``channels`` channels (``"N-channel"`` if unknown)."""
    family = LATENT_FAMILIES.get(int(channels))
    return f"{channels}-channel {family}" if family else f"{channels}-channel"


def snap_multiple(target_downscale: object) -> int:
    """The size multiple a hand-off output must have: ``lcm(8, f)`` for an integer VAE downscale factor ``f``
    (ComfyUI's ``VAE.downscale_ratio``), else 8."""
    if isinstance(target_downscale, int) and target_downscale > 0:
        return math.lcm(DEFAULT_MULTIPLE, target_downscale)
    return DEFAULT_MULTIPLE


def snap_size(pixels: float, multiple: int = DEFAULT_MULTIPLE) -> int:
    """``pixels`` rounded to the nearest multiple of ``multiple`` (halves round to even, Python ``round``),
    never below one multiple."""
    return max(multiple, multiple * round(pixels / multiple))


def handoff_size(height: int, width: int, scale: float, multiple: int = DEFAULT_MULTIPLE) -> tuple[int, int]:
    """(H', W') = (snap(H·scale), snap(W·scale)) for an image of ``height`` x ``width`` pixels."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return snap_size(height * scale, multiple), snap_size(width * scale, multiple)


def resize_images(images: torch.Tensor, height: int, width: int, method: str = "bicubic") -> torch.Tensor:
    """Resize ComfyUI IMAGE tensors ``[B, H, W, C]`` to ``height`` x ``width`` with ``F.interpolate(mode=method)``
    (as ``ImageScale`` does); returns ``images`` itself when the size is unchanged."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"method must be one of {RESIZE_METHODS}, not {method!r}")
    if images.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {tuple(images.shape)}")
    if tuple(images.shape[1:3]) == (height, width):
        return images
    resized = torch.nn.functional.interpolate(images.movedim(-1, 1), size=(height, width), mode=method)
    return resized.movedim(1, -1)


def batch_chunks(batch_size: int, chunk: int) -> list[slice]:
    """Consecutive slices of at most ``chunk`` samples covering ``range(batch_size)`` (one progress step each)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [slice(start, min(start + chunk, batch_size)) for start in range(0, batch_size, chunk)]
