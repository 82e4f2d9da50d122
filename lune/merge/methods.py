"""Merge methods: ONE table (``METHODS``), each method one record of a transform, a sign vote and an aggregate.

Notation, per state-dict key: base θ₀, models θᵢ (i = 1..N), task vectors τᵢ = θᵢ − θ₀, all in float64.
Every method yields a merged task vector τₘ and the result θ = θ₀ + λ·τₘ (λ = ``strength``), cast back to the
base tensor's dtype.

* Transforms. DARE, Yu et al. 2023 "Language Models are Super Mario" (arXiv 2311.03099): τ̃ᵢ = mᵢ ⊙ τᵢ / (1 − p)
  with mᵢ ~ Bernoulli(1 − p) elementwise. **DROP** (6DammK9, AstolfoMix-XL, nai-anime-pure-negative-prompt
  ch05): the same mask without the rescale, τ̃ᵢ = mᵢ ⊙ τᵢ. TIES trim, Yadav et al. 2023 "TIES-Merging" (arXiv
  2306.01708): τ̂ᵢ keeps the elements with |τᵢ| ≥ tᵢ, the k-th largest |τᵢ| of that tensor,
  k = ⌈density·numel⌉ (equal magnitudes at the threshold are all kept), the rest set to 0.
* Sign votes: magnitude γ = sgn(Σᵢ τ̂ᵢ) (TIES), or sign count γ = sgn(Σᵢ sgn τ̂ᵢ) ("TIES-SOUP", k = 1, as in
  the AstolfoMix-XL recipe). Filter: fᵢ = τ̂ᵢ·[sgn τ̂ᵢ = γ]; where γ = 0 every fᵢ = 0.
* Aggregates: mean τₘ = (1/N) Σ xᵢ (task arithmetic, Ilharco et al. 2023, with uniform weights 1/N: the pack's
  ``task_arithmetic`` is θ₀ + λ·mean τᵢ, not θ₀ + λ·Σ τᵢ); disjoint mean τₘ = Σ fᵢ / #{i : fᵢ ≠ 0} (0 where that
  count is 0; fᵢ ≠ 0 exactly where sgn τ̂ᵢ = γ ≠ 0); geometric median by Weiszfeld's algorithm as in Pillutla et
  al. "Robust Aggregation for Federated Learning" (arXiv 1912.13445), with whole-tensor Frobenius norms:
      m⁰ = mean(xᵢ);  for t = 0 … T−1:  dᵢ = ‖xᵢ − mᵗ‖_F;  βᵢ = 1 / max(dᵢ, eps);  mᵗ⁺¹ = Σ βᵢxᵢ / Σ βᵢ
  eps = 1e-6, T = ``max_iterations``. Every mᵗ is a weighted mean Σ wᵢxᵢ, so the iterations run on the N
  weights alone: with the Gram matrix Gᵢⱼ = ⟨xᵢ, xⱼ⟩ (one pass over the data),
  dᵢ² = Gᵢᵢ − 2(Gw)ᵢ + wᵀGw, and only the final m = Σ wᵢxᵢ is formed — an iteration costs O(N²), not O(N·numel).
  Stopping rules: ``precision`` (default) stops once the distance left to the limit, estimated from the
  linear convergence of the weights as |λ|·‖Δwᵗ‖₁/(1 − r), r = ‖Δwᵗ‖₁/‖Δwᵗ⁻¹‖₁, is below every element's half
  output spacing divided by maxᵢ|xᵢₑ| (so no element of θ₀ + λ·m is expected to move by half a step of the
  output dtype any more; the spacing is taken at the smallest |θ| the element can reach,
  max(|θ₀ₑ| − |λ|·maxᵢ|xᵢₑ|, 0)); ``reference`` is the released TGMD run's rule: objᵗ = Σ dᵢ, stop when t > 0 and
  |objᵗ⁻¹ − objᵗ| ≤ ftol·objᵗ with ftol = 1e-20 — below float64 resolution, so in practice exactly T iterations.

Adding a method is adding one ``Method`` record to ``METHODS``: validation, the recipe, the node's combo and
tooltip and the docs table read it; ``merge_models`` dispatches through it. Every part works on a chunk of the
flattened key (an N × length float64 stack) so that a key too large for the memory budget is processed in
pieces; an aggregate that needs the whole tensor (the Gram matrix) accumulates over the chunks first.

Dropout masks: element e of model i is kept when u ≥ p, u ~ U[0, 1) (float32) drawn by a ``torch.Generator``
seeded with SHA-256 of (seed, model index, key, e // 2²⁰) — one generator per block of 2²⁰ elements, so any
chunk's mask is regenerated exactly, in every pass and whatever order keys are merged in; the model index is
its position in the list.

Why float64: the sums run over up to a hundred models of fp16/bf16 deltas whose magnitude is ~1e-3 of the
weights; float64 keeps the accumulated rounding (~N·2⁻⁵³) far below the final cast to the base dtype, and it
matches the reference TGMD run, done in fp64.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from typing import Callable

import torch

ACCUMULATION_DTYPE = torch.float64
WEISZFELD_EPS = 1e-6
WEISZFELD_FTOL = 1e-20
STOP_RULES = ("precision", "reference")
MASK_BLOCK = 1 << 20


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


@dataclass
class KeyContext:
    """One key being merged: its name, size, output dtype, the parameters, and what passes leave for later ones."""
    key: str
    numel: int
    count: int
    out_dtype: torch.dtype
    params: MergeParams
    cache: dict = field(default_factory=dict)
    iterations: list[int] = field(default_factory=list)  # Weiszfeld iterations run (for the log)


# -------------------------------------------------------------------------------------------- transforms

def mask_seed(seed: int, model_index: int, key: str, block: int = 0) -> int:
    """63-bit generator seed from (seed, model index, key, block): SHA-256, the same in every process."""
    digest = hashlib.sha256(f"lune-merge:{seed}:{model_index}:{key}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keep_mask_range(seed: int, model_index: int, key: str, start: int, stop: int, drop_rate: float) -> torch.Tensor:
    """Keep mask of the flattened elements [start, stop) (``start`` a multiple of ``MASK_BLOCK``)."""
    parts = []
    for block_start in range(start, stop, MASK_BLOCK):
        length = min(MASK_BLOCK, stop - block_start)
        generator = torch.Generator().manual_seed(mask_seed(seed, model_index, key, block_start // MASK_BLOCK))
        parts.append(torch.rand(length, generator=generator, dtype=torch.float32) >= drop_rate)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def keep_mask(seed: int, model_index: int, key: str, shape, drop_rate: float) -> torch.Tensor:
    """The whole tensor's Bernoulli(1 − drop_rate) keep mask (module docstring)."""
    numel = math.prod(shape)
    if numel == 0:
        return torch.ones(shape, dtype=torch.bool)
    return keep_mask_range(seed, model_index, key, 0, numel, drop_rate).reshape(shape)


@dataclass(frozen=True)
class Transform:
    """``apply(x, i, start, ctx)`` edits model i's chunk x (float64, elements [start, start + len)) in place;
    ``prepare(tau, i, ctx)``, when given, first sees model i's whole flattened τᵢ once (e.g. a threshold)."""
    apply: Callable[[torch.Tensor, int, int, KeyContext], None]
    prepare: Callable[[torch.Tensor, int, KeyContext], None] | None = None


def _drop(x: torch.Tensor, i: int, start: int, ctx: KeyContext) -> None:
    p = ctx.params
    if p.drop_rate > 0:
        x.mul_(keep_mask_range(p.seed, i, ctx.key, start, start + x.numel(), p.drop_rate))


def _dare(x: torch.Tensor, i: int, start: int, ctx: KeyContext) -> None:
    _drop(x, i, start, ctx)
    if ctx.params.drop_rate > 0:
        x.div_(1.0 - ctx.params.drop_rate)


def kth_largest_magnitude(tau: torch.Tensor, density: float) -> float:
    """tᵢ: the k-th largest |τ| of one tensor, k = ⌈density·numel⌉ (TIES trim threshold)."""
    flat = tau.abs().reshape(-1)
    k = max(1, math.ceil(density * flat.numel()))
    return float(torch.kthvalue(flat, flat.numel() - k + 1).values)


def _trim_prepare(tau: torch.Tensor, i: int, ctx: KeyContext) -> None:
    if ctx.params.density < 1.0:
        ctx.cache["trim", i] = kth_largest_magnitude(tau, ctx.params.density)


def _trim(x: torch.Tensor, i: int, start: int, ctx: KeyContext) -> None:
    if ctx.params.density < 1.0:
        x.masked_fill_(x.abs() < ctx.cache["trim", i], 0.0)


drop = Transform(_drop)
dare = Transform(_dare)
trim = Transform(_trim, _trim_prepare)


# ------------------------------------------------------------------------------------------------- votes
# A vote maps the N × len stack to γ as float64 in {−1, 0, +1}; the filter then keeps xᵢ where sgn xᵢ = γ.

Vote = Callable[[torch.Tensor], torch.Tensor]


def magnitude_vote(stack: torch.Tensor) -> torch.Tensor:
    """γ = sgn Σ τ̂ᵢ (float64 sum)."""
    return torch.sign(stack.sum(0))


def sign_count_vote(stack: torch.Tensor) -> torch.Tensor:
    """γ = sgn Σ sgn τ̂ᵢ (a float64 sum of ±1/0 terms, exact), one model at a time: a reduction over the whole
    stack would first make an N × len temporary (bool, then int32) as large as half the stack."""
    total = torch.zeros(stack.shape[1], dtype=ACCUMULATION_DTYPE)
    for row in stack:
        total.add_(torch.sign(row))
    return total.sign_()


def apply_filter(stack: torch.Tensor, gamma: torch.Tensor) -> None:
    """fᵢ = xᵢ·[sgn xᵢ = γ] in place, as γ·max(γ·xᵢ, 0) (γ ∈ {−1, 0, +1})."""
    stack.mul_(gamma).clamp_(min=0).mul_(gamma)


# -------------------------------------------------------------------------------------------- aggregates

@dataclass(frozen=True)
class Aggregate:
    """``combine(stack, ctx)`` → this chunk's τₘ. An aggregate over the whole tensor first gets every chunk in
    ``accumulate(stack, base_chunk, ctx)`` and then ``solve(ctx)``; ``combine`` sees each chunk again."""
    combine: Callable[[torch.Tensor, KeyContext], torch.Tensor]
    accumulate: Callable[[torch.Tensor, torch.Tensor, KeyContext], None] | None = None
    solve: Callable[[KeyContext], None] | None = None


def _mean(stack: torch.Tensor, ctx: KeyContext) -> torch.Tensor:
    return stack.sum(0).div_(stack.shape[0])


def _disjoint_mean(stack: torch.Tensor, ctx: KeyContext) -> torch.Tensor:
    agreeing = torch.zeros(stack.shape[1], dtype=ACCUMULATION_DTYPE)
    for row in stack:  # one model at a time, as in sign_count_vote (no N × len temporary)
        agreeing.add_(row != 0)
    return stack.sum(0).div_(agreeing.clamp_(min=1))


def output_spacing(magnitude: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Distance from |θ| to the next representable value of ``dtype`` (subnormal spacing below its tiny)."""
    info = torch.finfo(dtype)
    exponent = torch.frexp(magnitude.clamp(min=info.tiny)).exponent  # |θ| = f·2^e, f ∈ [0.5, 1)
    return torch.ldexp(torch.full_like(magnitude, info.eps / 2), exponent)


def _gram_accumulate(stack: torch.Tensor, base: torch.Tensor, ctx: KeyContext) -> None:
    gram = stack @ stack.t()
    ctx.cache["gram"] = gram if "gram" not in ctx.cache else ctx.cache["gram"].add_(gram)
    if ctx.params.stop == "precision":
        # the most λ·mₑ can be, in size: max |xᵢₑ| as max(max xᵢₑ, −min xᵢₑ), without an N × len |stack| temporary
        reach = torch.maximum(stack.amax(0), stack.amin(0).neg_()).mul_(abs(ctx.params.strength))
        low = (base.abs() - reach).clamp_(min=0)
        tolerance = output_spacing(low, ctx.out_dtype).div_(2).div_(reach)  # x/0 = inf: element cannot move
        ctx.cache["tolerance"] = min(ctx.cache.get("tolerance", math.inf), float(tolerance.min()))


def weiszfeld_weights(gram: torch.Tensor, params: MergeParams, tolerance: float = 0.0) -> tuple[torch.Tensor, int]:
    """(w, iterations): the geometric median Σ wᵢxᵢ from the Gram matrix (module docstring)."""
    n = gram.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=ACCUMULATION_DTYPE)
    diagonal = gram.diagonal()
    previous = None
    last_change = math.inf
    iterations = 0
    for _ in range(params.max_iterations):
        gw = gram @ w
        distances = (diagonal - 2 * gw + torch.dot(w, gw)).clamp_(min=0).sqrt_()
        if params.stop == "reference":
            objective = float(distances.sum())
            if previous is not None and abs(previous - objective) <= params.ftol * objective:
                break
            previous = objective
        beta = 1.0 / distances.clamp(min=params.eps)
        updated = beta / beta.sum()
        iterations += 1
        change = float((updated - w).abs().sum())
        w = updated
        rate = change / last_change if last_change > 0 else 0.0
        last_change = change
        # distance left to the limit of a linearly converging sequence: ≤ change·rate/(1 − rate)
        if params.stop == "precision" and rate < 1 and abs(params.strength) * change / (1 - rate) <= tolerance:
            break
    return w, iterations


def _gram_solve(ctx: KeyContext) -> None:
    w, iterations = weiszfeld_weights(ctx.cache["gram"], ctx.params, ctx.cache.get("tolerance", 0.0))
    ctx.cache["weights"] = w
    ctx.iterations.append(iterations)


def _weighted(stack: torch.Tensor, ctx: KeyContext) -> torch.Tensor:
    return torch.mv(stack.t(), ctx.cache["weights"])


mean = Aggregate(_mean)
disjoint_mean = Aggregate(_disjoint_mean)
geometric_median = Aggregate(_weighted, _gram_accumulate, _gram_solve)


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
    "tgmd": Method(drop, sign_count_vote, geometric_median,
                   ("drop_rate", "seed") + GEOMEDIAN_PARAMS + ("strength",),
                   "τ̃ᵢ = mᵢ⊙τᵢ; γ = sgn Σ sgn τ̃ᵢ; θ₀ + λ·GeoMedian(τ̃ᵢ[sgn τ̃ᵢ = γ])",
                   "AstolfoMix-XL TGMD: DROP p, TIES-SOUP sign filter, geometric median"),
}


def tooltip() -> str:
    return " ".join(f"{name}: {m.summary}." for name, m in METHODS.items())


def docs_table() -> str:
    """The methods table of docs/reference.md §8, generated from ``METHODS``."""
    rows = ["| method | result | reads |", "|---|---|---|"]
    rows += [f"| `{name}` | {m.formula} | {', '.join(m.params)} |" for name, m in METHODS.items()]
    return "\n".join(rows)
