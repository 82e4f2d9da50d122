"""Lyra v1 (AbstractPhil/vae-lyra, SD1.5: CLIP-L + t5-base) and Lyra-XL (SDXL: CLIP-L + CLIP-G + flan-t5-xl), pure
torch (docs/reference.md §3, "Lyra-XL").

Nothing here imports ComfyUI. Typical use from the node layer (``lyra`` is a subpackage of the pack)::

    from ..lyra import load_lyra, blend, transform_chunks
    vae = load_lyra("models/lyra/vae-lyra")              # eval, fp32, frozen
    with torch.inference_mode():
        recon = vae.reconstruct({"clip": clip77, "t5": t5_77}, mode="mean")["clip"]
"""

from .cantor import CantorFusion, cantor_coordinate, cantor_coordinates, nearest_routes
from .checkpoint import LyraLoadInfo, load_lyra, read_checkpoint, resolve_checkpoint_path
from .config import LyraConfig
from .errors import LyraCheckpointError, LyraConfigError, LyraError, LyraInputError, LyraUnsafeFileError
from .fusion_apply import blend, transform_chunks, transform_conditioning
from .model import MODES, LyraVAE
from .xl_apply import transform_sdxl_conditioning
from .xl_checkpoint import detect_kind, load_any_lyra, load_lyra_xl, spec_from_state
from .xl_model import LyraXL, LyraXLAdaptive, LyraXLCantor
from .xl_spec import LyraXLSpec
from .text import pad_or_truncate_ids, strip_prompt_weighting

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
    "LyraXL",
    "LyraXLAdaptive",
    "LyraXLCantor",
    "LyraXLSpec",
    "MODES",
    "blend",
    "cantor_coordinate",
    "cantor_coordinates",
    "detect_kind",
    "load_any_lyra",
    "load_lyra_xl",
    "spec_from_state",
    "transform_sdxl_conditioning",
    "load_lyra",
    "nearest_routes",
    "pad_or_truncate_ids",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "strip_prompt_weighting",
    "transform_chunks",
    "transform_conditioning",
]
