"""The Lyra-XL modules: v1-xl (Cantor fusion, one encoder) and v2 (adaptive Cantor fusion, one encoder per modality),
for SDXL's CLIP-L + CLIP-G with flan-t5-xl (docs/reference.md, "Lyra-XL"; layouts in :mod:`lyra.xl_spec`).

Every token position is computed independently (the fusion attends across modalities at the same position, never
across positions), so the CLIP reconstructions at positions 0..76 depend only on positions 0..76 of every input.
The author pads v2's 77 CLIP tokens with zeros to the T5 length (512) and slices the CLIP outputs back to 77; the
padded positions never reach a CLIP output, so here every modality is cut to the first 77 positions
(``reconstruct_clip``). The T5 states themselves must still come from the whole prompt (T5 attends across it).

v1-xl (geofractal ``vae_lyra.py``), per token, M = 3 modalities::

    fused = CantorFusion({clip_l, clip_g, t5_xl})         (lyra.cantor; routes = all 3 modalities)
    mu, logvar = fc_mu(encoder(fused)), fc_logvar(encoder(fused))

v2 (geofractal ``vae_lyra_v2.py``), per token, M = 4, H heads of D = hidden/H, τ = ``fusion.temperature``::

    p_m   = P_m(x_m);  g_m = σ(W2·GELU(W1·p_m + b1) + b2)       alpha_gates[m]: Linear(h, h/4), GELU, Linear(h/4, 1)
    x_m   = p_m · (g_m·σ(α_m) + 1 − σ(α_m)) + E[m]                       alphas[m]: learned scalar
    q,k,v = q_proj(x), k_proj(x), v_proj(x)                                shared
    soft  (before 2025-11-25): keys w ∈ routes[i] (the stored ``modality_routes``);
          s_iw = q_i·k_w / (√D·|τ|) · (1 + [w = b]·(σ(β_ib) − 1))        for each bound source b of target i
          o_i = Σ_w softmax_w(s_iw) v_w;   f_m = out_proj(mean_i o_i)     the same fused tensor for every m
    hard  (Illustrious):  keys j = all modalities;
          s_ij = q_i·k_j / (√D·|τ|) + mask_ij + [j = b]·σ(β_ib)          mask = ``binding_mask`` (0 or −inf)
          o_i = Σ_j softmax_j(s_ij) v_j;   f_m = out_projs[m](mean_{i ∈ group(m)} o_i)
          groups = connected components of the allowed (0) entries of ``binding_mask``
    mu    = mean_m fc_mus[m](encoders[m](f_m));  logvar = mean_m fc_logvars[m](encoders[m](f_m))
            (hard: each modality's logvar is clamped to [−10, 10] before the mean, as in the author's code)

Both: ``z = mu`` (mode "mean") or ``mu + exp(logvar/2)·ε`` (mode "sample"); ``recon_m = decoders[m](z)``.
Layer stacks (Linear, LayerNorm eps 1e-5, exact GELU) are Lyra v1's (:mod:`lyra.model`). Run in fp32.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .cantor import CantorFusion
from .errors import LyraInputError
from .model import MODES, _build_decoder, _build_encoder
from .xl_spec import V1_XL, V2_HARD, LyraXLSpec

__all__ = ["AdaptiveCantorFusion", "LyraXL", "LyraXLAdaptive", "LyraXLCantor", "CLIP_TOKENS"]

CLIP_TOKENS = 77
LOGVAR_CLAMP = 10.0


def _check_inputs(spec: LyraXLSpec, clip_l, clip_g, t5) -> None:
    for name, x in (("clip_l", clip_l), ("clip_g", clip_g)):
        if x.dim() != 3 or x.shape[1] != CLIP_TOKENS or x.shape[-1] != spec.modality_dims[name]:
            raise LyraInputError(f"{name} features have shape {list(x.shape)}; Lyra-XL expects "
                                 f"[batch, {CLIP_TOKENS}, {spec.modality_dims[name]}].")
    t5_width = spec.modality_dims[spec.t5_names[0]]
    if t5.dim() != 3 or t5.shape[-1] != t5_width or t5.shape[1] < CLIP_TOKENS:
        raise LyraInputError(f"T5 states have shape {list(t5.shape)}; Lyra-XL expects [batch, ≥{CLIP_TOKENS}, "
                             f"{t5_width}] (flan-t5-xl). Load flan-t5-xl with Load Lyra T5-XL.")
    if not clip_l.shape[0] == clip_g.shape[0] == t5.shape[0]:
        raise LyraInputError(f"batch sizes differ: clip_l {clip_l.shape[0]}, clip_g {clip_g.shape[0]}, "
                             f"T5 {t5.shape[0]}.")


def sample_latent(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``mu + exp(logvar/2)·ε``, ε drawn on the generator's device (CPU: the same z on every device)."""
    gen_device = generator.device if generator is not None else mu.device
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=gen_device).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


class LyraXL(nn.Module):
    """Common API of the Lyra-XL modules: :meth:`reconstruct_clip`."""

    spec: LyraXLSpec

    def inputs(self, clip_l: torch.Tensor, clip_g: torch.Tensor, t5: torch.Tensor) -> dict[str, torch.Tensor]:
        """The modality dict (first 77 positions, module dtype/device); the T5 states feed every T5 modality."""
        _check_inputs(self.spec, clip_l, clip_g, t5)
        ref = self.fusion.q_proj.weight
        t5 = t5[:, :CLIP_TOKENS]
        feats = {"clip_l": clip_l, "clip_g": clip_g, **{name: t5 for name in self.spec.t5_names}}
        return {k: v.to(device=ref.device, dtype=ref.dtype) for k, v in feats.items()}

    def encode(self, feats: dict[str, torch.Tensor], need_logvar: bool = True):
        raise NotImplementedError

    def reconstruct_clip(self, clip_l: torch.Tensor, clip_g: torch.Tensor, t5: torch.Tensor, mode: str = "mean",
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon_clip_l [B,77,768], recon_clip_g [B,77,1280])`` from CLIP-L, CLIP-G ``[B,77,·]`` and flan-t5-xl
        states ``[B, ≥77, 2048]`` (only the first 77 positions are used; see the module docstring)."""
        if mode not in MODES:
            raise LyraInputError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        mu, logvar = self.encode(self.inputs(clip_l, clip_g, t5), need_logvar=mode == "sample")
        z = mu if mode == "mean" else sample_latent(mu, logvar, generator)
        return self.decoders["clip_l"](z), self.decoders["clip_g"](z)


class LyraXLCantor(LyraXL):
    """v1-xl: Lyra v1's network with three modalities (AbstractPhil/vae-lyra-sdxl-t5xl)."""

    def __init__(self, spec: LyraXLSpec) -> None:
        super().__init__()
        if spec.kind != V1_XL:
            raise ValueError(f"LyraXLCantor builds {V1_XL}, not {spec.kind}")
        self.spec = spec
        self.fusion = CantorFusion(spec.modality_dims, spec.hidden_dim, spec.fusion_heads)
        self.encoder = _build_encoder(spec)
        self.fc_mu = nn.Linear(2 * spec.latent_dim, spec.latent_dim)
        self.fc_logvar = nn.Linear(2 * spec.latent_dim, spec.latent_dim)
        self.decoders = nn.ModuleDict({n: _build_decoder(spec, d) for n, d in spec.modality_dims.items()})

    def encode(self, feats, need_logvar=True):
        h = self.encoder(self.fusion(feats))
        return self.fc_mu(h), (self.fc_logvar(h) if need_logvar else None)


def _alpha_gate(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden // 4), nn.GELU(), nn.Linear(hidden // 4, 1), nn.Sigmoid())


class AdaptiveCantorFusion(nn.Module):
    """v2 fusion, soft or hard (formulas in the module docstring). Returns ``{modality: [B, L, hidden]}``.

    Buffers ``modality_cantor_coords``, ``modality_routes`` (and ``binding_mask`` for hard) are loaded from the
    file: the stored routes are authoritative (Cantor coordinates of 4 modalities tie, so recomputed routes may
    order them differently); the soft β masks are derived from the stored routes at load
    (:meth:`refresh_bindings`)."""

    def __init__(self, spec: LyraXLSpec, hard: bool) -> None:
        super().__init__()
        names, h = spec.modality_names, spec.hidden_dim
        m = len(names)
        self.names, self.hard = names, hard
        self.heads, self.head_dim = spec.fusion_heads, spec.head_dim
        self.bindings = tuple(spec.bindings)
        self.modality_projections = nn.ModuleDict({n: nn.Linear(d, h) for n, d in spec.modality_dims.items()})
        self.modality_embeddings = nn.Parameter(torch.zeros(m, h))
        self.alphas = nn.ParameterDict({n: nn.Parameter(torch.tensor(1.0)) for n in names})
        self.betas = nn.ParameterDict({f"{t}_{s}": nn.Parameter(torch.tensor(0.3)) for t, s in self.bindings})
        self.alpha_gates = nn.ModuleDict({n: _alpha_gate(h) for n in names})
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.register_buffer("modality_cantor_coords", torch.zeros(m), persistent=True)
        self.register_buffer("modality_routes", torch.zeros(m, min(3, m), dtype=torch.int64), persistent=True)
        if hard:
            self.register_buffer("binding_mask", torch.zeros(m, m), persistent=True)
            self.out_projs = nn.ModuleDict({n: nn.Linear(h, h) for n in names})
        else:
            self.out_proj = nn.Linear(h, h)
        self.temperature = nn.Parameter(torch.tensor(0.07))
        self.groups: list[list[int]] = [[i] for i in range(m)]
        self.route_boost: list[list[tuple[int, str]]] = [[] for _ in range(m)]

    def refresh_bindings(self) -> None:
        """Derive what the forward needs from the loaded buffers: the hard binding groups (connected components of
        ``binding_mask == 0``) and, for soft, which route slot of each target holds each bound source."""
        m = len(self.names)
        index = {n: i for i, n in enumerate(self.names)}
        if self.hard:
            allowed = (self.binding_mask == 0) | (self.binding_mask == 0).T
            parent = list(range(m))

            def find(x: int) -> int:
                while parent[x] != x:
                    x = parent[x]
                return x

            for i in range(m):
                for j in range(m):
                    if bool(allowed[i, j]):
                        parent[find(i)] = find(j)
            self.groups = [[j for j in range(m) if find(j) == find(i)] for i in range(m)]
        else:
            routes = self.modality_routes.tolist()
            self.route_boost = [[] for _ in range(m)]
            for target, source in self.bindings:
                t, s = index[target], index[source]
                self.route_boost[t] += [(w, f"{target}_{source}") for w, r in enumerate(routes[t]) if r == s]

    def _project(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        out = []
        for i, name in enumerate(self.names):
            p = self.modality_projections[name](feats[name])
            a = torch.sigmoid(self.alphas[name])
            p = p * (self.alpha_gates[name](p) * a + (1 - a))
            out.append(p + self.modality_embeddings[i])
        return torch.stack(out, dim=2)  # [B, L, M, h]

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self._project(feats)
        b, n_tok, m, _ = x.shape
        shape = (b, n_tok, m, self.heads, self.head_dim)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        scale = 1.0 / (math.sqrt(self.head_dim) * self.temperature.abs())
        outs = []
        for i, target in enumerate(self.names):
            if self.hard:
                keys, vals = k, v  # [B, L, M, H, D]
            else:
                route = self.modality_routes[i].to(device=x.device, dtype=torch.long)
                keys, vals = k[:, :, route], v[:, :, route]
            scores = torch.einsum("blhd,blwhd->blhw", q[:, :, i], keys) * scale
            if self.hard:
                scores = scores + self.binding_mask[i].to(scores)
                for t_name, s_name in self.bindings:
                    if t_name == target:
                        j = self.names.index(s_name)
                        boost = torch.zeros(m, dtype=scores.dtype, device=scores.device)
                        boost[j] = torch.sigmoid(self.betas[f"{t_name}_{s_name}"])
                        scores = scores + boost
            else:
                for w, key in self.route_boost[i]:
                    factor = torch.ones(scores.shape[-1], dtype=scores.dtype, device=scores.device)
                    factor[w] = torch.sigmoid(self.betas[key])
                    scores = scores * factor
            outs.append(torch.einsum("blhw,blwhd->blhd", torch.softmax(scores, dim=-1), vals))
        if not self.hard:
            fused = self.out_proj(torch.stack(outs, dim=0).mean(dim=0).reshape(b, n_tok, -1))
            return {name: fused for name in self.names}
        result = {}
        for i, name in enumerate(self.names):
            group = self.groups[i]
            o = outs[i] if len(group) == 1 else torch.stack([outs[j] for j in group], dim=0).mean(dim=0)
            result[name] = self.out_projs[name](o.reshape(b, n_tok, -1))
        return result


class LyraXLAdaptive(LyraXL):
    """v2 (AbstractPhil/vae-lyra-xl-adaptive-cantor, soft; …-illustrious, hard)."""

    def __init__(self, spec: LyraXLSpec) -> None:
        super().__init__()
        if spec.kind == V1_XL:
            raise ValueError("LyraXLAdaptive builds the v2 layouts")
        self.spec = spec
        self.hard = spec.kind == V2_HARD
        self.fusion = AdaptiveCantorFusion(spec, self.hard)
        names = spec.modality_names
        self.encoders = nn.ModuleDict({n: _build_encoder(spec) for n in names})
        self.fc_mus = nn.ModuleDict({n: nn.Linear(2 * spec.latent_dim, spec.latent_dim) for n in names})
        self.fc_logvars = nn.ModuleDict({n: nn.Linear(2 * spec.latent_dim, spec.latent_dim) for n in names})
        self.decoders = nn.ModuleDict({n: _build_decoder(spec, d) for n, d in spec.modality_dims.items()})

    def encode(self, feats, need_logvar=True):
        fused = self.fusion(feats)
        mus, logvars = [], []
        for name in self.spec.modality_names:
            h = self.encoders[name](fused[name])
            mus.append(self.fc_mus[name](h))
            if need_logvar:
                lv = self.fc_logvars[name](h)
                logvars.append(lv.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP) if self.hard else lv)
        mu = torch.stack(mus, dim=0).mean(dim=0)
        return mu, (torch.stack(logvars, dim=0).mean(dim=0) if need_logvar else None)


def build_xl(spec: LyraXLSpec) -> LyraXL:
    """The module for ``spec.kind`` (weights uninitialised; load a state dict)."""
    return LyraXLCantor(spec) if spec.kind == V1_XL else LyraXLAdaptive(spec)
