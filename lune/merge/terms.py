"""The two ways to hold one key's terms xᵢ (``methods.Terms``): resident in memory, or streamed from the files.

* ``ResidentTerms``: τᵢ = θᵢ − θ₀ computed once per model into one float64 N × numel stack (each model read
  once for this key), transformed and filtered in place; sums are a reduction over the stack and
  Σ wᵢxᵢ is one matrix–vector product, so a Weiszfeld iteration reads the stack twice whatever N is.
* ``StreamedTerms``: xᵢ recomputed from the file in every pass (read, subtract, transform, filter), keeping
  only O(one tensor) accumulators: memory does not grow with N. Used for keys whose stack does not fit the
  memory budget.

Neither ever writes into a tensor a source handed out and then keeps it: every τᵢ is a new float64 tensor
(``torch.sub`` out of place or a copy into the stack), so a float64 input is never altered.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import LuneFormatError
from .methods import ACCUMULATION_DTYPE, KeyContext, Method

Reader = Callable[[int], torch.Tensor]  # model index → its stored tensor for this key (fresh, any float dtype)


def check_finite(tensor: torch.Tensor, file: str, key: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise LuneFormatError(f"{file}: tensor {key!r} holds {bad} non-finite value(s) (NaN or ±inf); nothing was "
                              "written. The file is damaged or was saved from a diverged training run: leave it out "
                              "of the merge.")


def _filter_(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """x·[sgn x = γ] in place (γ = 0 is stored as NO_SIGN and never matches)."""
    return x.masked_fill_(torch.sign(x).to(torch.int8) != gamma, 0.0)


class ResidentTerms:
    def __init__(self, raws: list[torch.Tensor], names: list[str], ctx: KeyContext, method: Method) -> None:
        self.count, self.shape = len(raws), ctx.base.shape
        numel = ctx.base.numel()
        base = ctx.base.reshape(-1)
        self.stack = torch.empty((self.count, numel), dtype=ACCUMULATION_DTYPE)
        for i, raw in enumerate(raws):
            check_finite(raw, names[i], ctx.key)
            row = self.stack[i]
            row.copy_(raw.reshape(-1))
            row.sub_(base)
            if method.transform is not None:
                method.transform(row.view(self.shape), i, ctx)
        self._scratch = torch.empty(numel, dtype=ACCUMULATION_DTYPE)

    def term(self, i: int) -> torch.Tensor:
        return self.stack[i].view(self.shape)

    def total(self) -> torch.Tensor:
        return self.stack.sum(0).view(self.shape)

    def weighted_total(self, weights: list[float]) -> torch.Tensor:
        w = torch.tensor(weights, dtype=ACCUMULATION_DTYPE)
        return torch.mv(self.stack.t(), w).view(self.shape)

    def distances(self, point: torch.Tensor) -> list[float]:
        flat = point.reshape(-1)
        out = []
        for i in range(self.count):
            torch.sub(self.stack[i], flat, out=self._scratch)
            out.append(float(torch.linalg.vector_norm(self._scratch)))
        return out

    def filter(self, gamma: torch.Tensor) -> None:
        flat = gamma.reshape(-1)
        for i in range(self.count):
            _filter_(self.stack[i], flat)


class StreamedTerms:
    def __init__(self, read: Reader, names: list[str], ctx: KeyContext, method: Method) -> None:
        self.count, self.shape = len(names), ctx.base.shape
        self.read, self.names, self.ctx, self.method = read, names, ctx, method
        self.gamma: torch.Tensor | None = None
        self._checked: set[int] = set()

    def term(self, i: int) -> torch.Tensor:
        raw = self.read(i)
        if i not in self._checked:
            check_finite(raw, self.names[i], self.ctx.key)
            self._checked.add(i)
        x = raw.to(ACCUMULATION_DTYPE)
        x = torch.sub(x, self.ctx.base) if x is raw else x.sub_(self.ctx.base)  # never alter what was read
        del raw
        if self.method.transform is not None:
            self.method.transform(x, i, self.ctx)
        if self.gamma is not None:
            _filter_(x, self.gamma)
        return x

    def total(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=ACCUMULATION_DTYPE)
        for i in range(self.count):
            out.add_(self.term(i))
        return out

    def weighted_total(self, weights: list[float]) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=ACCUMULATION_DTYPE)
        for i in range(self.count):
            out.add_(self.term(i), alpha=weights[i])
        return out

    def distances(self, point: torch.Tensor) -> list[float]:
        return [float(torch.linalg.vector_norm(self.term(i).sub_(point))) for i in range(self.count)]

    def filter(self, gamma: torch.Tensor) -> None:
        self.gamma = gamma
