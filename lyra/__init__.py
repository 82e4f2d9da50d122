"""Lyra v1 (AbstractPhil/vae-lyra): CLIP-L + T5-base Cantor-fusion VAE, pure torch (docs/reference.md §3).

Nothing here imports ComfyUI. Typical use from the node layer::

    from lyra import load_lyra, blend, transform_chunks
    vae = load_lyra("models/lyra/vae-lyra")              # eval, fp32, frozen
    with torch.inference_mode():
        recon = vae.reconstruct({"clip": clip77, "t5": t5_77}, mode="mean")["clip"]
"""

from .cantor import CantorFusion, cantor_coordinate, cantor_coordinates, nearest_routes
from .checkpoint import LyraLoadInfo, load_lyra, read_checkpoint, resolve_checkpoint_path, save_lyra_safetensors
from .config import LyraConfig
from .errors import LyraCheckpointError, LyraConfigError, LyraError, LyraInputError, LyraUnsafeFileError
from .fusion_apply import blend, transform_chunks, transform_conditioning
from .model import MODES, LyraVAE
from .text import fit_tokens, pad_or_truncate_ids, strip_prompt_weighting

__all__ = [
    "CantorFusion",
    "LyraCheckpointError",
    "LyraConfig",
    "LyraConfigError",
    "LyraError",
    "LyraInputError",
    "LyraLoadInfo",
    "LyraUnsafeFileError",
    "LyraVAE",
    "MODES",
    "blend",
    "cantor_coordinate",
    "cantor_coordinates",
    "fit_tokens",
    "load_lyra",
    "nearest_routes",
    "pad_or_truncate_ids",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "save_lyra_safetensors",
    "strip_prompt_weighting",
    "transform_chunks",
    "transform_conditioning",
]
