"""What a Lyra-XL checkpoint is: its layout, sizes and the inputs it was trained on (docs/reference.md, "Lyra-XL").

Three published SDXL Lyra models (huggingface.co/AbstractPhil), three weight layouts, told apart by their keys:

=================  ==========================================  ============================================
layout             published model                             tell-tale keys
=================  ==========================================  ============================================
``v1-xl``          vae-lyra-sdxl-t5xl (fusion ``cantor``)      ``encoder.*``, ``fc_mu``; modalities
                                                               clip_l 768, clip_g 1280, t5_xl 2048
``v2-soft``        vae-lyra-xl-adaptive-cantor                 ``encoders.<m>.*``, ``fusion.alphas.*``, one
                                                               shared ``fusion.out_proj``
``v2-hard``        vae-lyra-xl-adaptive-cantor-illustrious     ``fusion.out_projs.<m>.*``, ``fusion.binding_mask``
=================  ==========================================  ============================================

v2 modalities: clip_l 768@77, clip_g 1280@77, t5_xl_l 2048@512, t5_xl_g 2048@512 (the same flan-t5-xl states feed
both T5 inputs). Sources: AbstractEyes/geofractal ``src/geofractal/model/vae/vae_lyra.py`` (v1),
``vae_lyra_v2.py`` (hard at HEAD, soft at commit 03e5cd7), ``lyra_loader.py`` (the registry of the three models),
``trainers/vae/lyra_xl.py`` and ``lyra_xl_multimodal.py`` (what CLIP/T5 states the models were trained on).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from .config import FusionShape

__all__ = ["CLIP_LAST", "CLIP_PENULTIMATE", "KINDS", "LyraXLSpec", "PUBLISHED_XL", "XL_MODALITIES"]

V1_XL, V2_SOFT, V2_HARD = "v1-xl", "v2-soft", "v2-hard"
KINDS = (V1_XL, V2_SOFT, V2_HARD)
#: Canonical modality order of each layout (row order of ``fusion.modality_embeddings``; ``lyra_loader.py``).
XL_MODALITIES = {
    V1_XL: ("clip_l", "clip_g", "t5_xl"),
    V2_SOFT: ("clip_l", "clip_g", "t5_xl_l", "t5_xl_g"),
    V2_HARD: ("clip_l", "clip_g", "t5_xl_l", "t5_xl_g"),
}
#: Widths of the modalities: SDXL CLIP-L, OpenCLIP bigG, flan-t5-xl.
XL_WIDTHS = {"clip_l": 768, "clip_g": 1280, "t5_xl": 2048, "t5_xl_l": 2048, "t5_xl_g": 2048}
#: CLIP states the model was trained on: ``last`` = final layer with the final LayerNorm (Hugging Face
#: ``last_hidden_state``), ``penultimate`` = the layer before, without it (``clip_skip=2``; ComfyUI's stock SDXL
#: encode).
CLIP_LAST, CLIP_PENULTIMATE = "last", "penultimate"
#: The published repositories: the files a loader needs (config path relative to the weights' folder).
PUBLISHED_XL = {
    "AbstractPhil/vae-lyra-sdxl-t5xl": ("config.json", "model.pt"),
    "AbstractPhil/vae-lyra-xl-adaptive-cantor": ("config.json", "model.pt"),
    "AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious": ("config.json", "weights/lyra_best.safetensors"),
}


@dataclasses.dataclass(frozen=True)
class LyraXLSpec(FusionShape):
    """Sizes of one Lyra-XL model, read from its weights (shapes) and its config.json (heads, T5 length, CLIP
    layer). ``bindings`` are the (target, source) pairs that have a learned β (v2); ``t5_tokens`` is the T5
    length the author tokenises to (77 for v1-xl, 512 for v2, padded with an attention mask)."""

    kind: str
    modality_dims: Mapping[str, int]
    hidden_dim: int
    latent_dim: int
    encoder_layers: int
    decoder_layers: int
    fusion_heads: int = 8
    t5_tokens: int = 77
    clip_layer: str = CLIP_LAST
    bindings: tuple[tuple[str, str], ...] = ()
    dropout: float = 0.0

    @property
    def t5_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.modality_names if n.startswith("t5"))
