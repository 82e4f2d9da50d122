"""Merge methods: ONE table (``METHODS``), each method one record of a transform, a sign vote and an aggregate.

Notation, per state-dict key: base θ₀, models θᵢ (i = 1..N), task vectors τᵢ = θᵢ − θ₀, all in float64.
Every method yields a merged task vector τₘ and the result θ = θ₀ + λ·τₘ (λ = ``strength``), cast back to the
base tensor's dtype.

Steps:

* Transforms. DARE, Yu et al. 2023 "Language Models are Super Mario" (arXiv 2311.03099): τ̃ᵢ = mᵢ ⊙ τᵢ / (1 − p)
  with mᵢ ~ Bernoulli(1 − p) elementwise. **DROP** (6DammK9, AstolfoMix-XL, nai-anime-pure-negative-prompt
  ch05): the same mask without the rescale, τ̃ᵢ = mᵢ ⊙ τᵢ. TIES trim, Yadav et al. 2023 "TIES-Merging" (arXiv
  2306.01708): τ̂ᵢ keeps the elements with |τᵢ| ≥ tᵢ, the k-th largest |τᵢ| of that tensor,
  k = ⌈density·numel⌉ (equal magnitudes at the threshold are all kept), the rest set to 0.
* Sign votes: magnitude γ = sgn(Σᵢ τ̂ᵢ) (TIES), or sign count γ = sgn(Σᵢ sgn τ̂ᵢ) ("TIES-SOUP", k = 1, as in
  the AstolfoMix-XL recipe). Filter: fᵢ = τ̂ᵢ·[sgn τ̂ᵢ = γ]; where γ = 0 every fᵢ = 0.
* Aggregates: mean τₘ = (1/N) Σ xᵢ (task arithmetic, Ilharco et al. 2023: the pack uses uniform weights 1/N,
  so ``task_arithmetic`` is θ₀ + λ·mean τᵢ, not θ₀ + λ·Σ τᵢ); disjoint mean τₘ = Σ fᵢ / #{i : fᵢ ≠ 0} (0 where
  that count is 0; fᵢ ≠ 0 exactly where sgn τ̂ᵢ = γ ≠ 0); geometric median by Weiszfeld's algorithm as in
  Pillutla et al. "Robust Aggregation for Federated Learning" (arXiv 1912.13445), with whole-tensor Frobenius
  norms (one scalar per model per key):
      m⁰ = mean(xᵢ);  for t = 0 … T−1:  dᵢ = ‖xᵢ − mᵗ‖_F;  βᵢ = 1 / max(dᵢ, eps);  mᵗ⁺¹ = Σ βᵢxᵢ / Σ βᵢ
  eps = 1e-6, T = ``max_iterations``. Stopping rules: ``precision`` (default) stops after the first iteration
  that changes no element of θ₀ + λ·m once cast to the output dtype (the median has stopped moving at the
  precision the file stores); ``reference`` is the released TGMD run's rule: objᵗ = Σ dᵢ, stop when t > 0
  and |objᵗ⁻¹ − objᵗ| ≤ ftol·objᵗ with ftol = 1e-20 — below float64 resolution, so in practice exactly T
  iterations.

Adding a method is adding one ``Method`` record to ``METHODS``: validation, the recipe, the node's combo and
tooltip and the docs table read it; ``merge_models`` dispatches through it.

Dropout masks come from a ``torch.Generator`` seeded with a hash of (seed, model index, key), so they are the
same in every pass and whatever order keys are merged in; the model index is its position in the list.

Why float64: the sums run over up to a hundred models of fp16/bf16 deltas whose magnitude is ~1e-3 of the
weights; float64 keeps the accumulated rounding (~N·2⁻⁵³) far below the final cast to the base dtype, and it
matches the reference TGMD run, done in fp64.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Protocol

import torch

ACCUMULATION_DTYPE = torch.float64
WEISZFELD_EPS = 1e-6
WEISZFELD_FTOL = 1e-20
STOP_RULES = ("precision", "reference")
NO_SIGN = 2  # elected sign where the vote ties (γ = 0)


# --------------------------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class MergeParams:
    method: str = "ties"
    density: float = 1.0
    drop_rate: float = 0.1
    strength: float = 1.0
    seed: int = 0
    max_iterations: int = 100
    stop: str = "precision"
    eps: float = WEISZFELD_EPS
    ftol: float = WEISZFELD_FTOL

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; use one of {', '.join(METHODS)}.")
        for name in METHODS[self.method].params:
            problem = PARAMETER_CHECKS[name](getattr(self, name))
            if problem:
                raise ValueError(f"{name} {problem}, not {getattr(self, name)!r}.")

    def used(self) -> dict:
        """The parameters this method reads (the recipe and the log)."""
        return {name: getattr(self, name) for name in METHODS[self.method].params}


PARAMETER_CHECKS: dict[str, Callable[[object], str | None]] = {
    "density": lambda v: None if 0.0 < v <= 1.0 else "must be in (0, 1] (the kept fraction per tensor)",
    "drop_rate": lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1) (the dropped fraction)",
    "strength": lambda v: None if math.isfinite(v) else "must be a finite number",
    "seed": lambda v: None if isinstance(v, int) and v >= 0 else "must be an integer ≥ 0",
    "max_iterations": lambda v: None if isinstance(v, int) and v >= 0 else "must be an integer ≥ 0",
    "stop": lambda v: None if v in STOP_RULES else f"must be one of {', '.join(STOP_RULES)}",
    "eps": lambda v: None if v > 0 else "must be > 0",
    "ftol": lambda v: None if v >= 0 else "must be ≥ 0",
}
assert set(PARAMETER_CHECKS) == {f.name for f in fields(MergeParams)} - {"method"}


# ------------------------------------------------------------------------------------------ term providers

class Terms(Protocol):
    """The N per-model terms xᵢ of one key (float64, read-only) and the few reductions the aggregates need.

    ``merge_models`` gives either resident terms (every xᵢ computed once, held in one N × numel stack) or
    streamed terms (each xᵢ recomputed from the files in every pass, memory O(one tensor)); both implement this."""

    count: int
    shape: torch.Size

    def term(self, i: int) -> torch.Tensor: ...

    def total(self) -> torch.Tensor: ...                       # Σ xᵢ (new tensor)

    def weighted_total(self, weights: list[float]) -> torch.Tensor: ...  # Σ wᵢ xᵢ (new tensor)

    def distances(self, point: torch.Tensor) -> list[float]: ...        # ‖xᵢ − point‖_F

    def filter(self, gamma: torch.Tensor) -> None: ...         # xᵢ ← xᵢ·[sgn xᵢ = γ] from now on


@dataclass
class KeyContext:
    """What a method needs besides the terms: the key, θ₀ (float64), λ, the output dtype and the parameters."""
    key: str
    base: torch.Tensor
    out_dtype: torch.dtype
    params: MergeParams
    iterations: list[int] = field(default_factory=list)  # Weiszfeld iterations run (for the log)
    cache: dict = field(default_factory=dict)  # per-model values a transform computes once (TIES thresholds)


# -------------------------------------------------------------------------------------------- transforms

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


# A transform edits τᵢ (a float64 tensor the engine owns) in place: (τᵢ, i, context) → None.
Transform = Callable[[torch.Tensor, int, KeyContext], None]


def drop(tau: torch.Tensor, i: int, ctx: KeyContext) -> None:
    p = ctx.params
    if p.drop_rate > 0:
        tau.masked_fill_(keep_mask(p.seed, i, ctx.key, tau.shape, p.drop_rate).logical_not_(), 0.0)


def dare(tau: torch.Tensor, i: int, ctx: KeyContext) -> None:
    drop(tau, i, ctx)
    if ctx.params.drop_rate > 0:
        tau.div_(1.0 - ctx.params.drop_rate)


def trim(tau: torch.Tensor, i: int, ctx: KeyContext) -> None:
    if ctx.params.density < 1.0:
        if ("trim", i) not in ctx.cache:
            ctx.cache["trim", i] = kth_largest_magnitude(tau, ctx.params.density)
        tau.masked_fill_(tau.abs() < ctx.cache["trim", i], 0.0)


# ------------------------------------------------------------------------------------------------- votes

Vote = Callable[[Terms], torch.Tensor]


def _elected(total: torch.Tensor) -> torch.Tensor:
    """γ as int8 with γ = 0 stored as ``NO_SIGN`` (2), which no sgn xᵢ equals."""
    return torch.sign(total).to(torch.int8).masked_fill_(total == 0, NO_SIGN)


def magnitude_vote(terms: Terms) -> torch.Tensor:
    """γ = sgn Σ τ̂ᵢ (float64 sum)."""
    return _elected(terms.total())


def sign_count_vote(terms: Terms) -> torch.Tensor:
    """γ = sgn Σ sgn τ̂ᵢ (int32 count)."""
    count = torch.zeros(terms.shape, dtype=torch.int32)
    for i in range(terms.count):
        count.add_(torch.sign(terms.term(i)).to(torch.int8))
    return _elected(count)


# -------------------------------------------------------------------------------------------- aggregates

Aggregate = Callable[[Terms, KeyContext], torch.Tensor]


def mean(terms: Terms, ctx: KeyContext) -> torch.Tensor:
    return terms.total().div_(terms.count)


def disjoint_mean(terms: Terms, ctx: KeyContext) -> torch.Tensor:
    total = torch.zeros(terms.shape, dtype=ACCUMULATION_DTYPE)
    agreeing = torch.zeros(terms.shape, dtype=torch.int32)
    for i in range(terms.count):
        x = terms.term(i)
        total.add_(x)
        agreeing.add_(x != 0)
    return total.div_(agreeing.clamp_(min=1))


def geometric_median(terms: Terms, ctx: KeyContext) -> torch.Tensor:
    """Weiszfeld (module docstring), with the stopping rule ``ctx.params.stop``."""
    p = ctx.params
    median = terms.total().div_(terms.count)
    previous_objective = None
    previous_output = _as_output(median, ctx) if p.stop == "precision" else None
    iterations = 0
    for _ in range(p.max_iterations):
        distances = terms.distances(median)
        if p.stop == "reference":
            objective = math.fsum(distances)
            if previous_objective is not None and abs(previous_objective - objective) <= p.ftol * objective:
                break
            previous_objective = objective
        weights = [1.0 / max(d, p.eps) for d in distances]
        total = math.fsum(weights)
        median = terms.weighted_total([w / total for w in weights])
        iterations += 1
        if p.stop == "precision":
            output = _as_output(median, ctx)
            if torch.equal(output, previous_output):
                break
            previous_output = output
    ctx.iterations.append(iterations)
    return median


def _as_output(delta: torch.Tensor, ctx: KeyContext) -> torch.Tensor:
    return torch.add(ctx.base, delta, alpha=ctx.params.strength).to(ctx.out_dtype)


# ------------------------------------------------------------------------------------------------ methods

@dataclass(frozen=True)
class Method:
    """One merge method: τᵢ → ``transform`` → (``vote`` → filter) → ``aggregate`` → θ₀ + λ·τₘ."""
    transform: Transform | None
    vote: Vote | None
    aggregate: Aggregate
    params: tuple[str, ...]
    formula: str
    summary: str

    @property
    def multi_pass(self) -> bool:
        """Whether the method reads each τᵢ more than once (then holding them in memory saves re-reading)."""
        return self.vote is not None or self.aggregate is not mean


GEOMEDIAN_PARAMS = ("max_iterations", "stop", "eps", "ftol")
METHODS: dict[str, Method] = {
    "task_arithmetic": Method(None, None, mean, ("strength",), "θ₀ + λ·(1/N)·Σ τᵢ",
                              "θ₀ + λ·mean of the task vectors (uniform weights 1/N)"),
    "ties": Method(trim, magnitude_vote, disjoint_mean, ("density", "strength"),
                   "τ̂ᵢ = top-density trim of τᵢ; γ = sgn Σ τ̂ᵢ; θ₀ + λ·Σ τ̂ᵢ[sgn τ̂ᵢ = γ] / #{agreeing}",
                   "keep the largest density fraction of each τ, magnitude sign vote, mean of the agreeing values"),
    "ties_soup": Method(None, sign_count_vote, disjoint_mean, ("strength",),
                        "γ = sgn Σ sgn τᵢ; θ₀ + λ·Σ τᵢ[sgn τᵢ = γ] / #{agreeing}",
                        "sign-count vote (k = 1), mean of the agreeing values"),
    "dare": Method(dare, None, mean, ("drop_rate", "seed", "strength"), "θ₀ + λ·(1/N)·Σ mᵢ⊙τᵢ/(1−p)",
                   "drop each element with probability p, rescale kept ones by 1/(1−p), mean"),
    "drop": Method(drop, None, mean, ("drop_rate", "seed", "strength"), "θ₀ + λ·(1/N)·Σ mᵢ⊙τᵢ",
                   "drop each element with probability p (no rescale), mean"),
    "geometric_median": Method(None, None, geometric_median, GEOMEDIAN_PARAMS + ("strength",),
                               "θ₀ + λ·GeoMedian(τ₁…τ_N) (Weiszfeld)",
                               "geometric median of the task vectors (Weiszfeld, whole-tensor norms)"),
    "tgmd": Method(drop, sign_count_vote, geometric_median, ("drop_rate", "seed") + GEOMEDIAN_PARAMS + ("strength",),
                   "τ̃ᵢ = mᵢ⊙τᵢ; γ = sgn Σ sgn τ̃ᵢ; θ₀ + λ·GeoMedian(τ̃ᵢ[sgn τ̃ᵢ = γ])",
                   "AstolfoMix-XL TGMD: DROP p, TIES-SOUP sign filter, geometric median"),
}


def merged_delta(method: Method, terms: Terms, ctx: KeyContext) -> torch.Tensor:
    """τₘ for one key (the terms already carry the transform)."""
    if method.vote is not None:
        terms.filter(method.vote(terms))
    return method.aggregate(terms, ctx)


def tooltip() -> str:
    return " ".join(f"{name}: {m.summary}." for name, m in METHODS.items())


def docs_table() -> str:
    """The methods table of docs/reference.md §8, generated from ``METHODS``."""
    rows = ["| method | result | reads |", "|---|---|---|"]
    rows += [f"| `{name}` | {m.formula} | {', '.join(m.params)} |" for name, m in METHODS.items()]
    return "\n".join(rows)
