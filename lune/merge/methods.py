"""Per-tensor merge methods that stream over the models: memory O(one tensor), independent of their number N.

Notation, per state-dict key: base θ₀, models θᵢ (i = 1..N), task vectors τᵢ = θᵢ − θ₀, all in float64.
Every method yields a merged task vector τₘ and the result θ = θ₀ + λ·τₘ (λ = ``strength``), cast back to the
base tensor's dtype.

Steps (a method is a choice of one transform, one sign election and one aggregate):

* DARE, Yu et al. 2023 "Language Models are Super Mario" (arXiv 2311.03099): τ̃ᵢ = mᵢ ⊙ τᵢ / (1 − p) with
  mᵢ ~ Bernoulli(1 − p) elementwise. **DROP** (6DammK9, AstolfoMix-XL, nai-anime-pure-negative-prompt ch05):
  the same mask without the rescale, τ̃ᵢ = mᵢ ⊙ τᵢ.
* TIES trim, Yadav et al. 2023 "TIES-Merging" (arXiv 2306.01708): τ̂ᵢ keeps the elements with |τᵢ| ≥ tᵢ, the
  k-th largest |τᵢ| of that tensor, k = ⌈density·numel⌉ (``torch.kthvalue`` on the one tensor; equal
  magnitudes at the threshold are all kept), the rest set to 0.
* Sign election: magnitude vote γ = sgn(Σᵢ τ̂ᵢ) (TIES), or sign-count vote γ = sgn(Σᵢ sgn τ̂ᵢ)
  ("TIES-SOUP", k = 1, as in the AstolfoMix-XL recipe). Filter: fᵢ = τ̂ᵢ·[sgn τ̂ᵢ = γ]; where γ = 0 every
  fᵢ = 0, so the merged delta is 0 there.
* Aggregates: mean τₘ = (1/N) Σ τ̂ᵢ (task arithmetic, Ilharco et al. 2023); disjoint mean
  τₘ = Σ fᵢ / #{i : sgn τ̂ᵢ = γ ≠ 0} (0 where that count is 0); geometric median by Weiszfeld's algorithm as
  in Pillutla et al. "Robust Aggregation for Federated Learning" (arXiv 1912.13445), with whole-tensor
  Frobenius norms (one scalar per model per key):
      m⁰ = mean(xᵢ);  for t = 0 … T−1:  dᵢ = ‖xᵢ − mᵗ‖_F,  objᵗ = Σ dᵢ,
      stop if t > 0 and |objᵗ⁻¹ − objᵗ| ≤ ftol·objᵗ;  βᵢ = 1 / max(dᵢ, eps);  mᵗ⁺¹ = Σ βᵢxᵢ / Σ βᵢ
  (eps = 1e-6, ftol = 1e-20 and T = 100 as in the released TGMD run).

Methods: task_arithmetic = mean(τᵢ); dare = mean(DARE τᵢ); drop = mean(DROP τᵢ); ties = TIES trim +
magnitude vote + disjoint mean; ties_soup = no trim + sign-count vote + disjoint mean; geometric_median =
GeoMedian(τᵢ); tgmd = DROP + sign-count vote + GeoMedian(fᵢ) — the AstolfoMix-XL "x116a" recipe (p = 0.1,
λ = 1.0).

Streaming: each step is a pass over the N models that re-reads θᵢ for this key and keeps only running
accumulators — a float64 sum, an int32 sign count or agreeing-model count, the current median m, and N scalars
(thresholds tᵢ, distances dᵢ). Dropout masks are regenerated in every pass from a ``torch.Generator`` seeded
with a hash of (seed, model index, key), so they are identical across passes and whatever order keys are merged
in; the model index is its position in the list, so listing the models in another order draws other masks
(the recipe in the output's metadata records the order).

Why float64: the sums run over up to a hundred models of fp16/bf16 deltas whose magnitude is ~1e-3 of the
weights; float64 keeps the accumulated rounding (~N·2⁻⁵³) far below the final cast to the base dtype, so the
result does not depend on the number or order of models, and it matches the reference TGMD run, done in fp64.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

METHODS = ("task_arithmetic", "ties", "ties_soup", "dare", "drop", "geometric_median", "tgmd")
ACCUMULATION_DTYPE = torch.float64
WEISZFELD_EPS = 1e-6
WEISZFELD_FTOL = 1e-20
NO_SIGN = 2  # elected sign where the vote ties (γ = 0)


@dataclass(frozen=True)
class MergeParams:
    method: str = "ties"
    density: float = 1.0
    drop_rate: float = 0.1
    strength: float = 1.0
    seed: int = 0
    max_iterations: int = 100
    eps: float = WEISZFELD_EPS
    ftol: float = WEISZFELD_FTOL

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; use one of {', '.join(METHODS)}.")
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1] (the kept fraction per tensor), not {self.density}.")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1) (the dropped fraction), not {self.drop_rate}.")
        if self.max_iterations < 0:
            raise ValueError(f"max_iterations must be ≥ 0, not {self.max_iterations}.")

    def used(self) -> dict:
        """The parameters this method actually reads (for the recipe and the log)."""
        names = {"task_arithmetic": ("strength",), "dare": ("drop_rate", "seed", "strength"),
                 "drop": ("drop_rate", "seed", "strength"), "ties": ("density", "strength"),
                 "ties_soup": ("strength",), "geometric_median": ("max_iterations", "eps", "ftol", "strength"),
                 "tgmd": ("drop_rate", "seed", "max_iterations", "eps", "ftol", "strength")}[self.method]
        return {name: getattr(self, name) for name in names}


def mask_seed(seed: int, model_index: int, key: str) -> int:
    """63-bit generator seed from (seed, model index, key): SHA-256, so it is the same in every process."""
    digest = hashlib.sha256(f"lune-merge:{seed}:{model_index}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keep_mask(seed: int, model_index: int, key: str, shape: torch.Size, drop_rate: float) -> torch.Tensor:
    """Bernoulli(1 − drop_rate) keep mask: u ~ U[0, 1) (float32, from the seeded generator), keep where u ≥ p."""
    generator = torch.Generator().manual_seed(mask_seed(seed, model_index, key))
    return torch.rand(shape, generator=generator, dtype=torch.float32) >= drop_rate


def kth_largest_magnitude(tau: torch.Tensor, density: float) -> float:
    """tᵢ: the k-th largest |τ| of one tensor, k = ⌈density·numel⌉ (TIES trim threshold)."""
    flat = tau.abs().reshape(-1)
    k = max(1, math.ceil(density * flat.numel()))
    return float(torch.kthvalue(flat, flat.numel() - k + 1).values)


class KeyMerge:
    """The merge of one key: ``delta(i)`` reads model i's τᵢ (float64); the methods combine them in passes."""

    def __init__(self, key: str, base: torch.Tensor, read_model: Callable[[int], torch.Tensor], count: int,
                 params: MergeParams) -> None:
        self.key = key
        self.base = base
        self.read_model = read_model
        self.count = count
        self.params = params
        self._thresholds: dict[int, float] = {}

    # ----------------------------------------------------------------------------------------- per-model terms

    def delta(self, i: int) -> torch.Tensor:
        tau = self.read_model(i).to(ACCUMULATION_DTYPE)
        return tau.sub_(self.base)

    def transformed(self, i: int) -> torch.Tensor:
        """τ̃ᵢ / τ̂ᵢ: DARE or DROP masking, or TIES trim, according to the method."""
        tau = self.delta(i)
        p = self.params
        if p.method in ("dare", "drop", "tgmd") and p.drop_rate > 0:
            tau.masked_fill_(keep_mask(p.seed, i, self.key, tau.shape, p.drop_rate).logical_not_(), 0.0)
            if p.method == "dare":
                tau.div_(1.0 - p.drop_rate)
        elif p.method == "ties" and p.density < 1.0:
            if i not in self._thresholds:
                self._thresholds[i] = kth_largest_magnitude(tau, p.density)
            tau.masked_fill_(tau.abs() < self._thresholds[i], 0.0)
        return tau

    # ------------------------------------------------------------------------------------------------ passes

    def mean(self) -> torch.Tensor:
        total = torch.zeros_like(self.base)
        for i in range(self.count):
            total.add_(self.transformed(i))
        return total.div_(self.count)

    def elected_sign(self, vote: str) -> torch.Tensor:
        """γ as int8: ``magnitude`` = sgn Σ τ̂ᵢ (float64 sum); ``sign_count`` = sgn Σ sgn τ̂ᵢ (int32 count).

        Where the vote is a tie (γ = 0) the value is ``NO_SIGN`` (2), which no sgn τ̂ᵢ equals."""
        if vote == "magnitude":
            total = torch.zeros_like(self.base)
            for i in range(self.count):
                total.add_(self.transformed(i))
        else:
            total = torch.zeros(self.base.shape, dtype=torch.int32)
            for i in range(self.count):
                total.add_(torch.sign(self.transformed(i)).to(torch.int32))
        return torch.sign(total).to(torch.int8).masked_fill_(total == 0, NO_SIGN)

    def filtered(self, i: int, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fᵢ, agreement): fᵢ = τ̂ᵢ·[sgn τ̂ᵢ = γ], agreement = [sgn τ̂ᵢ = γ ≠ 0]."""
        tau = self.transformed(i)
        agree = torch.sign(tau).to(torch.int8) == gamma  # γ = 0 is stored as NO_SIGN: never agrees
        return tau.masked_fill_(agree.logical_not(), 0.0), agree

    def disjoint_mean(self, gamma: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(self.base)
        agreeing = torch.zeros(self.base.shape, dtype=torch.int32)
        for i in range(self.count):
            f, agree = self.filtered(i, gamma)
            total.add_(f)
            agreeing.add_(agree)
        return total.div_(agreeing.clamp_(min=1))

    def geometric_median(self, term: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Weiszfeld over xᵢ = term(i); one pass per iteration holding m, one accumulator and N distances."""
        p = self.params
        median = torch.zeros_like(self.base)
        for i in range(self.count):
            median.add_(term(i))
        median.div_(self.count)
        previous = None
        for _ in range(p.max_iterations):
            weighted = torch.zeros_like(self.base)
            weight_sum, objective = 0.0, 0.0
            for i in range(self.count):
                x = term(i)
                distance = float(torch.linalg.vector_norm(x - median))
                objective += distance
                beta = 1.0 / max(distance, p.eps)
                weighted.add_(x, alpha=beta)
                weight_sum += beta
            if previous is not None and abs(previous - objective) <= p.ftol * objective:
                break
            previous = objective
            median = weighted.div_(weight_sum)
        return median

    # ------------------------------------------------------------------------------------------------ methods

    def merged_delta(self) -> torch.Tensor:
        method = self.params.method
        if method in ("task_arithmetic", "dare", "drop"):
            return self.mean()
        if method == "ties":
            return self.disjoint_mean(self.elected_sign("magnitude"))
        if method == "ties_soup":
            return self.disjoint_mean(self.elected_sign("sign_count"))
        if method == "geometric_median":
            return self.geometric_median(self.transformed)
        gamma = self.elected_sign("sign_count")  # tgmd
        return self.geometric_median(lambda i: self.filtered(i, gamma)[0])

    def result(self) -> torch.Tensor:
        """θ = θ₀ + λ·τₘ in float64."""
        return self.base + self.params.strength * self.merged_delta()
