"""Cantor-routed modality fusion (docs/reference.md §3, forward steps 1–5).

Written for any number of modalities ``M``; Lyra v1 uses ``M = 2`` (clip, t5).

Cantor coordinate of modality ``i`` of ``M`` (docs/reference.md §3 step 3)::

    x  = clamp(i / max(1, M - 1), 1e-6, 1 - 1e-6)
    for k = 1..8:  x = 3x;  d_k = floor(x);  x = x - d_k      (ternary digits)
    c_i = Σ_k [d_k == 2] · 2^-k                                 (digits 0/1 add 0)

Routes: row ``i`` lists the ``min(3, M)`` modalities nearest to ``i`` by
``|c_j - c_i|`` (``torch.topk(largest=False)`` on float32). For M=2 this gives
coords ``[0.0, 0.99609375]`` and routes ``[[0, 1], [1, 0]]`` (dense two-way
attention); for M=1 coord ``[0]`` and routes ``[[0]]``. For M >= 3 ties occur
(0.5 = 0.111…₃ maps to 0, like 0), and their order is unspecified — which is
why the *stored* ``modality_routes`` buffer of a checkpoint is authoritative
and is loaded, never recomputed.

Fusion (steps 1, 2, 4, 5), per token, with ``H`` heads of ``D = hidden/H``::

    x_m      = P_m(input_m) + E[m]                 P_m: Linear(dim_m -> hidden)
    q,k,v_m  = q_proj(x_m), k_proj(x_m), v_proj(x_m)        (shared, hidden -> hidden)
    a_{i,w}  = softmax_{w in routes[i]}( q_i·k_w / (sqrt(D)·|τ|) )   per head
    o_i      = Σ_w a_{i,w} · v_w
    fused    = dropout(out_proj(mean_i o_i))

τ is the learned scalar ``temperature`` (init 0.07). Dropout (``fusion_dropout``,
applied to the attention weights and to the output) is a no-op in eval mode.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn


__all__ = [
    "CANTOR_DEPTH",
    "ROUTE_WINDOW",
    "cantor_coordinate",
    "cantor_coordinates",
    "nearest_routes",
    "CantorFusion",
]

#: Number of ternary digits used for each coordinate (docs/reference.md §3 step 3).
CANTOR_DEPTH = 8
#: Maximum number of modalities each modality attends to (docs/reference.md §3 step 3).
ROUTE_WINDOW = 3
_CLAMP = 1e-6


def cantor_coordinate(i: int, m: int, depth: int = CANTOR_DEPTH) -> float:
    """Cantor coordinate of modality ``i`` among ``m`` (formula in module docstring).

    Computed in Python float (float64), digit by digit.
    """
    if m < 1 or not 0 <= i < m:
        raise ValueError(f"modality index {i} out of range for {m} modalities")
    x = i / max(1, m - 1)
    x = min(max(x, _CLAMP), 1.0 - _CLAMP)
    value = 0.0
    weight = 0.5
    for _ in range(depth):
        x *= 3.0
        digit = int(x)
        x -= digit
        if digit == 2:
            value += weight
        weight *= 0.5
    return value


def cantor_coordinates(m: int, depth: int = CANTOR_DEPTH) -> torch.Tensor:
    """All ``m`` coordinates as a float32 tensor ``[m]``."""
    return torch.tensor([cantor_coordinate(i, m, depth) for i in range(m)], dtype=torch.float32)


def nearest_routes(coords: torch.Tensor, window: int = ROUTE_WINDOW) -> torch.Tensor:
    """Routing table ``[M, min(window, M)]`` (int64).

    Row ``i`` = indices of the ``min(window, M)`` smallest ``|c_j - c_i|``, as
    returned by ``torch.topk(..., largest=False)`` on float32 (ascending
    distance; tie order unspecified).
    """
    c = coords.detach().to(torch.float32).reshape(-1)
    k = min(window, c.numel())
    dist = (c[None, :] - c[:, None]).abs()  # dist[i, j] = |c_j - c_i|
    return torch.topk(dist, k, dim=1, largest=False).indices.to(torch.int64)


def routes_problem(routes: torch.Tensor, m: int) -> str | None:
    """Describe why ``routes`` is unusable for ``m`` modalities, or ``None`` if fine."""
    if routes.dim() != 2 or routes.shape[0] != m or not 1 <= routes.shape[1] <= m:
        return f"modality_routes has shape {list(routes.shape)}, expected [{m}, 1..{m}]"
    if routes.is_floating_point() or routes.is_complex():
        return f"modality_routes has dtype {routes.dtype}, expected an integer type"
    if routes.numel() and (int(routes.min()) < 0 or int(routes.max()) >= m):
        return f"modality_routes contains indices outside [0, {m - 1}]: {routes.tolist()}"
    return None


class CantorFusion(nn.Module):
    """Cantor-routed multi-head fusion of per-token modality features.

    State-dict layout (docs/reference.md §3, under the ``fusion.`` prefix in :class:`LyraVAE`)::

        modality_projections.<name>.{weight [hidden, dim_name], bias [hidden]}
        modality_embeddings [M, hidden]
        {q,k,v,out}_proj.{weight [hidden, hidden], bias [hidden]}
        modality_cantor_coords [M] float32 (buffer), modality_routes [M, min(3,M)] int64 (buffer)
        temperature [] (scalar parameter)

    ``forward`` takes a mapping name -> ``[B, L, dim_name]`` containing every
    modality (order is taken from ``modality_dims``) and returns ``[B, L, hidden]``.
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        hidden_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        window: int = ROUTE_WINDOW,
        depth: int = CANTOR_DEPTH,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.modality_names = tuple(modality_dims)
        m = len(self.modality_names)
        if m < 1:
            raise ValueError("CantorFusion needs at least one modality")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads

        self.modality_projections = nn.ModuleDict(
            {name: nn.Linear(dim, hidden_dim) for name, dim in modality_dims.items()}
        )
        self.modality_embeddings = nn.Parameter(torch.randn(m, hidden_dim) * 0.02)
        self.q_proj = nn.Linear(hidden_dim, hidden_dim)
        self.k_proj = nn.Linear(hidden_dim, hidden_dim)
        self.v_proj = nn.Linear(hidden_dim, hidden_dim)
        coords = cantor_coordinates(m, depth)
        self.register_buffer("modality_cantor_coords", coords, persistent=True)
        self.register_buffer("modality_routes", nearest_routes(coords, window), persistent=True)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.temperature = nn.Parameter(torch.tensor(0.07))

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # Step 1: project each modality to hidden and add its embedding -> [B, L, M, hidden]
        x = torch.stack(
            [
                self.modality_projections[name](inputs[name]) + self.modality_embeddings[idx]
                for idx, name in enumerate(self.modality_names)
            ],
            dim=2,
        )
        b, n_tok, m, _ = x.shape
        h, d = self.num_heads, self.head_dim

        # Step 2: shared projections, split heads -> [B, L, M, H, D]
        q = self.q_proj(x).view(b, n_tok, m, h, d)
        k = self.k_proj(x).view(b, n_tok, m, h, d)
        v = self.v_proj(x).view(b, n_tok, m, h, d)

        # Step 4: routed attention. routes [M, W]; k_r, v_r: [B, L, M, W, H, D]
        routes = self.modality_routes.to(device=x.device, dtype=torch.long)
        k_r = k[:, :, routes]
        v_r = v[:, :, routes]
        scale = 1.0 / (math.sqrt(d) * self.temperature.abs())
        scores = torch.einsum("blmhd,blmwhd->blmhw", q, k_r) * scale
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.einsum("blmhw,blmwhd->blmhd", attn, v_r)

        # Step 5: mean over modalities, merge heads, output projection
        fused = out.mean(dim=2).reshape(b, n_tok, h * d)
        return self.dropout(self.out_proj(fused))
