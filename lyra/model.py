"""The Lyra v1 VAE module (docs/reference.md §3, forward steps 1–8).

Per token (every position is independent; inputs ``[B, L, dim_m]``)::

    fused  = CantorFusion({clip, t5})                       [B, L, hidden]   (steps 1–5)
    h      = encoder(fused)                                 [B, L, 2·latent] (step 6)
    mu     = fc_mu(h),  logvar = fc_logvar(h)               [B, L, latent]   (step 7)
    z      = mu                                  (mode="mean", deterministic; default here)
           | mu + exp(0.5·logvar)·ε,  ε ~ N(0,1) (mode="sample", what the author does)
    recon_m = decoders[m](z)                                [B, L, dim_m]    (step 8)

Layer stacks (indices are the state-dict indices; GELU is the exact erf form,
LayerNorm eps 1e-5 with affine weight and bias)::

    encoder:     for each of encoder_layers blocks: Linear, LayerNorm, GELU, Dropout,
                 last block is Linear(hidden -> 2·latent), LayerNorm (no GELU/Dropout)
                 v1: 0 Linear(1024,1024) 1 LN 2 GELU 3 Drop 4 Linear(1024,1024) 5 LN 6 GELU 7 Drop
                     8 Linear(1024,1536) 9 LN
    decoders[m]: first block from latent, last block a bare Linear(hidden -> dim_m)
                 v1: 0 Linear(768,1024) 1 LN 2 GELU 3 Drop 4 Linear(1024,1024) 5 LN 6 GELU 7 Drop
                     8 Linear(1024,768)

With the default config the module has 17,073,665 parameters. Run it in fp32:
attention scores are divided by |τ| ≈ 0.07, so fp16 risks overflow.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .cantor import CantorFusion
from .config import LyraConfig
from .errors import LyraInputError


__all__ = ["LyraVAE", "MODES"]

MODES = ("mean", "sample")
_LN_EPS = 1e-5

# What the user most likely connected when a width is wrong, and how to fix it.
_DISPLAY = {"clip": "CLIP", "t5": "T5"}
_EXPECTED_ENCODER = {"clip": "SD1.5 CLIP-L", "t5": "t5-base"}
_KNOWN_WIDTHS = {
    "clip": {
        2048: "SDXL CLIP, i.e. CLIP-L + CLIP-G concatenated",
        1280: "CLIP-G (SDXL)",
        1024: "SD2.x OpenCLIP-H",
        4096: "a T5-XXL — CLIP and T5 inputs may be swapped",
    },
    "t5": {
        4096: "T5-XXL, the Flux/SD3 text encoder",
        2048: "T5-XL",
        1024: "T5-large",
        512: "T5-small",
    },
}
_FIX = {
    "clip": "Use the CLIP of an SD1.5 checkpoint (last layer, no clip-skip).",
    "t5": "Load t5-base with CLIPLoader type stable_audio.",
}


def _mlp_block(in_dim: int, out_dim: int, dropout: float) -> list[nn.Module]:
    """Linear, LayerNorm, exact GELU, Dropout: four state-dict indices per block."""
    return [nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim, eps=_LN_EPS), nn.GELU(), nn.Dropout(dropout)]


def _build_encoder(cfg: LyraConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(cfg.encoder_layers - 1):
        layers += _mlp_block(cfg.hidden_dim, cfg.hidden_dim, cfg.dropout)
    in_dim = cfg.hidden_dim
    layers += [nn.Linear(in_dim, 2 * cfg.latent_dim), nn.LayerNorm(2 * cfg.latent_dim, eps=_LN_EPS)]
    return nn.Sequential(*layers)


def _build_decoder(cfg: LyraConfig, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_dim = cfg.latent_dim
    for _ in range(cfg.decoder_layers - 1):
        layers += _mlp_block(in_dim, cfg.hidden_dim, cfg.dropout)
        in_dim = cfg.hidden_dim
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class LyraVAE(nn.Module):
    """Lyra v1: CLIP-L + T5-base Cantor-fusion VAE (docs/reference.md §3).

    ``state_dict()`` keys and shapes are exactly those of the published
    ``AbstractPhil/vae-lyra`` ``model_state_dict``. Use
    :func:`lyra.checkpoint.load_lyra` to get an eval-mode fp32 instance with
    the published weights.
    """

    def __init__(self, config: LyraConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else LyraConfig()
        self.config = cfg
        self.modality_names = cfg.modality_names
        self.fusion = CantorFusion(cfg.modality_dims, cfg.hidden_dim, cfg.fusion_heads, cfg.fusion_dropout)
        self.encoder = _build_encoder(cfg)
        self.fc_mu = nn.Linear(2 * cfg.latent_dim, cfg.latent_dim)
        self.fc_logvar = nn.Linear(2 * cfg.latent_dim, cfg.latent_dim)
        self.decoders = nn.ModuleDict({name: _build_decoder(cfg, dim) for name, dim in cfg.modality_dims.items()})

    # ------------------------------------------------------------ validation
    def validate_inputs(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check modalities and shapes; return the inputs in modality order, cast
        to the module's device and dtype.

        Every modality must be present, each tensor ``[B, L, dim_m]`` with the
        same ``B`` and ``L`` across modalities. Raises :class:`LyraInputError`.
        """
        if not isinstance(inputs, Mapping):
            raise LyraInputError(
                "Lyra expects a dict of features {'clip': [B, L, 768], 't5': [B, L, 768]}, "
                f"got {type(inputs).__name__}."
            )
        names = self.modality_names
        _check_modality_names(inputs, names)
        ref_param = self.fc_mu.weight
        shapes: dict[str, tuple[int, ...]] = {}
        out: dict[str, torch.Tensor] = {}
        for name in names:
            x = inputs[name]
            label = _DISPLAY.get(name, name)
            if not isinstance(x, torch.Tensor):
                raise LyraInputError(f"{label} features must be a torch.Tensor, got {type(x).__name__}.")
            want = self.config.modality_dims[name]
            if x.dim() != 3:
                raise LyraInputError(
                    f"{label} features have shape {list(x.shape)}; Lyra expects [batch, tokens, {want}] "
                    f"(per-token hidden states, not a pooled vector)."
                )
            if x.shape[-1] != want:
                raise LyraInputError(_width_message(name, int(x.shape[-1]), want))
            if not x.is_floating_point():
                raise LyraInputError(f"{label} features have dtype {x.dtype}; expected floating point hidden states.")
            shapes[name] = tuple(x.shape)
            out[name] = x.to(device=ref_param.device, dtype=ref_param.dtype)
        first = names[0]
        for name in names[1:]:
            b0, l0 = shapes[first][:2]
            b1, l1 = shapes[name][:2]
            if b0 != b1:
                raise LyraInputError(
                    f"batch sizes differ: {_DISPLAY.get(first, first)} has {b0}, {_DISPLAY.get(name, name)} has {b1}. "
                    f"Encode the same number of prompts for both."
                )
            if l0 != l1:
                raise LyraInputError(
                    f"token counts differ: {_DISPLAY.get(first, first)} has {l0}, {_DISPLAY.get(name, name)} has {l1}. "
                    f"Lyra pairs tokens by position: tokenise T5 to exactly {self.config.seq_len} tokens "
                    f"(pad/truncate) and give CLIP one {self.config.seq_len}-token chunk."
                )
        return out

    # ---------------------------------------------------------------- passes
    def encode(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1–7: ``(mu, logvar)``, each ``[B, L, latent_dim]``."""
        x = self.validate_inputs(inputs)
        h = self.encoder(self.fusion(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def encode_mean(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Steps 1–7 without ``fc_logvar``: ``mu = fc_mu(encoder(fusion(inputs)))``, ``[B, L, latent_dim]``;
        equal bit for bit to ``encode(inputs)[0]``."""
        return self.fc_mu(self.encoder(self.fusion(self.validate_inputs(inputs))))

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 8: ``{name: decoders[name](z)}`` in modality order."""
        if z.dim() != 3 or z.shape[-1] != self.config.latent_dim:
            raise LyraInputError(
                f"latent has shape {list(z.shape)}; expected [batch, tokens, {self.config.latent_dim}]."
            )
        return {name: self.decoders[name](z) for name in self.modality_names}

    @staticmethod
    def sample_latent(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mu + exp(0.5·logvar)·ε``.

        ``ε`` is drawn on the generator's device (CPU for ``torch.Generator()``)
        and then moved to ``mu``'s device, so a seeded CPU generator gives the
        same ``z`` on every device. Without a generator the global RNG is used.
        """
        if generator is None:
            eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=generator.device)
            eps = eps.to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def reconstruct(
        self,
        inputs: Mapping[str, torch.Tensor],
        mode: str = "mean",
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode and decode. ``mode="mean"`` uses ``z = mu`` (deterministic);
        ``mode="sample"`` draws ``z`` with :meth:`sample_latent` from ``generator``
        (reproducible per seed). Returns ``{name: [B, L, dim_name]}``; the node
        layer uses ``["clip"]`` as SD1.5 conditioning (docs/reference.md §3 "Inference").
        """
        if mode not in MODES:
            raise LyraInputError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        mu, logvar = self.encode(inputs)
        z = mu if mode == "mean" else self.sample_latent(mu, logvar, generator)
        return self.decode(z)

    def reconstruct_modality(
        self,
        inputs: Mapping[str, torch.Tensor],
        name: str = "clip",
        mode: str = "mean",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``reconstruct(inputs, mode, generator)[name]``, bit for bit, without the work it throws away: the other
        decoders, and ``fc_logvar`` in mean mode (for SD1.5 conditioning, ``name="clip"``, that is ≈ 19 % of the
        FLOPs of a full reconstruction)."""
        if mode not in MODES:
            raise LyraInputError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        if name not in self.decoders:
            raise LyraInputError(f"Lyra has no {name!r} decoder; it decodes {list(self.modality_names)}.")
        if mode == "mean":
            z = self.encode_mean(inputs)
        else:
            mu, logvar = self.encode(inputs)
            z = self.sample_latent(mu, logvar, generator)
        return self.decoders[name](z)

    forward = reconstruct  # ``module(inputs)`` is :meth:`reconstruct`


def _check_modality_names(inputs: Mapping[str, torch.Tensor], names) -> None:
    """Raise LyraInputError unless ``inputs`` holds exactly the modalities ``names``."""
    missing = [n for n in names if n not in inputs or inputs[n] is None]
    extra = sorted(str(n) for n in inputs if n not in names)
    if not (missing or extra):
        return
    parts = [f"missing {missing}"] if missing else []
    if extra:
        parts.append(f"unexpected {extra}")
    raise LyraInputError(
        f"Lyra needs exactly the features {list(names)} ({', '.join(parts)}). "
        f"Connect SD1.5 CLIP-L features as 'clip' and t5-base features as 't5'."
    )


def _width_message(name: str, got: int, want: int) -> str:
    label = _DISPLAY.get(name, name)
    expected = _EXPECTED_ENCODER.get(name, name)
    guess = _KNOWN_WIDTHS.get(name, {}).get(got)
    guess_txt = f" (looks like {guess})" if guess else ""
    fix = _FIX.get(name, "")
    return f"{label} features are {got} wide{guess_txt}; Lyra expects {expected} ({want}). {fix}".rstrip()
