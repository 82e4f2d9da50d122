"""``merge_models``: base + N models → a new ``.safetensors``, one key at a time (math in ``methods``).

Order of work:

1. the recipe (``recipe``): when the output exists with the same recipe it is reused and nothing is merged;
   another recipe under that name is refused;
2. open every input (pickles through one temporary safetensors copy each, ``sources``) and plan the keys in
   one layout (LDM single-file names): a key is merged when it is a floating-point tensor of the base that
   every model holds; the base's other keys are copied from the base — or, for CLIP/VAE keys, from the
   ``clip_vae_from`` donor when one is given, which also supplies CLIP/VAE keys the base lacks. Extra keys of
   a model that are known not to be weights (EMA copies ``model_ema.*``, the LDM schedule buffers,
   ``position_ids``) or CLIP/VAE keys the base lacks are ignored with one log line; any other extra key, or a
   shape that differs from the base's, is refused (another architecture). ``model_ema.*`` of the base is not
   written (a stale copy of the base's own EMA weights);
3. per key, in the output's dtype-aligned order: θ₀ and the N stored tensors are checked finite (refused,
   naming file and key, before the file is published); the key is merged with its N terms resident in memory
   when the float64 stack fits ``memory_budget`` (each model read once for this key, the next key read by a
   second thread meanwhile), streamed pass by pass otherwise; θ = θ₀ + λ·τₘ is cast to the base's dtype and
   appended to the output;
4. the output is fsync-ed and published without overwriting (``lune.safe_write``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ..errors import LuneError, LuneFormatError, MissingComponentError, UnsupportedModelError
from ..safe_write import SafetensorsStreamWriter, element_size
from .methods import ACCUMULATION_DTYPE, MASK_BLOCK, METHODS, KeyContext, MergeParams, Method, apply_filter
from .recipe import RECIPE_METADATA_KEY, build_recipe, reusable
from .sources import CLIP_VAE_PREFIXES, SafetensorsSource, TemporaryCopies, open_source

log = logging.getLogger("lune")

DEFAULT_MEMORY_BUDGET_GIB = 2.0
Progress = Callable[[int, int, str], None]  # (work done, work total, current key); work ∝ elements read
LDM_BUFFERS = frozenset((
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "model_ema.decay", "model_ema.num_updates"))
MERGE, BASE, DONOR = "merge", "base", "donor"
ETA_LOG_SECONDS = 15.0


def not_a_weight(key: str) -> bool:
    """EMA copies, LDM diffusion-schedule buffers and CLIP position ids: never merged, ignored when extra."""
    return key.startswith("model_ema.") or key in LDM_BUFFERS or key.endswith("position_ids")


@dataclass
class Plan:
    specs: dict[str, tuple[torch.dtype, tuple[int, ...]]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def merged(self) -> list[str]:
        return [k for k, o in self.origin.items() if o == MERGE]


def _examples(keys) -> str:
    keys = sorted(keys)
    return ", ".join(repr(k) for k in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def plan_keys(  # noqa: C901 — one refusal per way inputs can disagree
base: SafetensorsSource, models: Sequence[SafetensorsSource],
              donor: SafetensorsSource | None) -> Plan:
    """Which key comes from where (module docstring, step 2); refusals name the file and the key."""
    plan = Plan()
    ignored: dict[str, set[str]] = {}
    for model in models:
        extra = set(model.info) - set(base.info)
        unknown = {k for k in extra if not not_a_weight(k) and not k.startswith(CLIP_VAE_PREFIXES)}
        if unknown:
            raise UnsupportedModelError(
                f"{model.name} does not match the base {base.name}: it has key {_examples(unknown)} that the base "
                "lacks. Merge only models of the same architecture (e.g. all SD1.5), in single-file or UNet-only "
                "layouts (diffusers-named UNets are read through the node, which maps the names with ComfyUI's "
                "own table).")
        for key in sorted(set(model.info) & set(base.info)):
            if model.info[key].shape != base.info[key].shape:
                raise UnsupportedModelError(
                    f"{model.name} does not match the base {base.name}: {key!r} has shape "
                    f"{list(model.info[key].shape)} there but {list(base.info[key].shape)} in the base. Merge only "
                    "models of the same architecture.")
        if extra:
            ignored[model.name] = extra
    candidates = [k for k, v in base.info.items() if v.dtype.is_floating_point and not not_a_weight(k)]
    for model in models:
        if not any(k in model.info for k in candidates):
            raise UnsupportedModelError(f"{model.name} shares no weight with the base {base.name}; nothing to merge. "
                                        "Pick models of the same architecture; a diffusers-named UNet needs the "
                                        "node (it maps the names with ComfyUI's own table).")
    merged = {k for k in candidates if all(k in m.info for m in models)}
    for key, info in base.info.items():
        if key.startswith("model_ema."):
            continue
        plan.specs[key] = (info.dtype, info.shape)
        plan.origin[key] = MERGE if key in merged else BASE
    if donor is not None:
        for key, info in donor.info.items():
            if not key.startswith(CLIP_VAE_PREFIXES) or plan.origin.get(key) == MERGE:
                continue
            if key in base.info and base.info[key].shape != info.shape:
                raise UnsupportedModelError(f"clip_vae_from {donor.name}: {key!r} has shape {list(info.shape)} there "
                                            f"but {list(base.info[key].shape)} in the base {base.name}. Pick a "
                                            "donor of the base's architecture.")
            plan.specs[key] = (info.dtype, info.shape)
            plan.origin[key] = DONOR
    dropped = [k for k in base.info if k.startswith("model_ema.")]
    if dropped:
        plan.notes.append(f"{len(dropped)} EMA tensors (model_ema.*) of the base are not written")
    if ignored:
        plan.notes.append("ignored extra keys: " + "; ".join(f"{name}: {len(keys)} ({_examples(keys)})"
                                                             for name, keys in ignored.items()))
    copied = [k for k, o in plan.origin.items() if o == BASE]
    if copied:
        plan.notes.append(f"{len(copied)} tensors copied from the base (non-float, buffers, or not in every model)")
    from_donor = [k for k, o in plan.origin.items() if o == DONOR]
    if from_donor:
        plan.notes.append(f"{len(from_donor)} CLIP/VAE tensors from clip_vae_from {donor.name}")
    if not merged:
        listed = ", ".join(m.name for m in models)
        raise UnsupportedModelError(f"No weight is held by the base and every model ({listed}); nothing to merge. "
                                    "Merge models of one architecture.")
    return plan


def chunk_length(numel: int, count: int, stored_size: int, budget: int) -> int:
    """Elements per chunk so that a chunk's memory fits ``budget``: the float64 N × len stack, θ₀, four float64
    rows of working space (vote and count, the result and its cast, the precision rule's bounds; the methods never
    make an N × len temporary) and the stored tensors of this chunk and of the next one (read ahead). Whole key
    when it fits; else a multiple of the dropout-mask block."""
    per_element = (count + 5) * 8 + 2 * (count + 1) * stored_size
    length = max(1, budget // per_element)
    if length >= numel:
        return max(numel, 1)
    return max(MASK_BLOCK, length // MASK_BLOCK * MASK_BLOCK)


class _Eta:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = max(total, 1), 0, progress
        self.start = self.last = time.perf_counter()

    def advance(self, work: int, key: str) -> None:
        self.done += work
        if self.progress is not None:
            self.progress(self.done, self.total, key)
        now = time.perf_counter()
        if now - self.last >= ETA_LOG_SECONDS and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed * (self.total - self.done) / max(self.done, 1)
            log.info("merge: %.0f%% after %s, about %s left", 100 * self.done / self.total, _duration(elapsed),
                     _duration(eta))


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def merge_models(base_path: str, model_paths: Sequence[str], output_path: str, params: MergeParams,
                 progress: Progress | None = None, metadata: Mapping[str, str] | None = None,
                 unet_names: Mapping[str, str] | None = None, clip_vae_from: str | None = None,
                 memory_budget_gib: float = DEFAULT_MEMORY_BUDGET_GIB) -> str:
    """Merge ``model_paths`` onto ``base_path`` into ``output_path`` (module docstring); returns ``output_path``.

    ``unet_names``: diffusers UNet name → LDM name (ComfyUI's ``unet_to_diffusers``), to read diffusers-named
    inputs; ``memory_budget_gib``: memory for holding one key's terms (keys that do not fit are streamed).
    ``progress(done, total, key)`` is called after every key.
    """
    params.validate()
    method = METHODS[params.method]
    if not model_paths:
        raise LuneError("No models to merge: list at least one model besides the base.")
    if not output_path.endswith(".safetensors"):
        raise LuneError(f"The output {output_path!r} must end in .safetensors.")
    if memory_budget_gib <= 0:
        raise LuneError(f"memory_budget_gib must be > 0, not {memory_budget_gib}.")
    for path in (base_path, *model_paths, *([clip_vae_from] if clip_vae_from else [])):
        if not os.path.isfile(path):
            raise MissingComponentError(f"{path} does not exist (or is not a file). Check the name and the folder.")
    started = time.perf_counter()
    recipe = build_recipe(params, base_path, model_paths, clip_vae_from)
    if reusable(output_path, recipe):
        log.info("merge: %s already holds this recipe (same method, parameters and input files); reused without "
                 "merging again", output_path)
        return output_path
    budget = int(memory_budget_gib * 2**30)
    copies = TemporaryCopies(os.path.dirname(os.path.abspath(output_path)))
    sources: list[SafetensorsSource] = []
    try:
        base = open_source(base_path, copies, unet_names)
        sources.append(base)
        models = []
        for path in model_paths:
            models.append(open_source(path, copies, unet_names))
            sources.append(models[-1])
        donor = open_source(clip_vae_from, copies, unet_names) if clip_vae_from else None
        if donor is not None:
            sources.append(donor)
        plan = plan_keys(base, models, donor)
        meta = {RECIPE_METADATA_KEY: json.dumps(recipe), **(metadata or {})}
        _run(plan, base, models, donor, output_path, params, method, meta, budget, progress)
    finally:
        for source in sources:
            source.close()
        copies.close()
    log.info("merge: wrote %s in %s", output_path, _duration(time.perf_counter() - started))
    return output_path


class _Reader:
    """Reads the chunks in the order they are used, one task ahead on a second thread (I/O overlaps compute)."""

    def __init__(self, tasks: list[tuple], read: Callable[[tuple], list[torch.Tensor]]) -> None:
        self.tasks, self.read = tasks, read
        self.pool = ThreadPoolExecutor(1)
        self.index = 0
        self.ahead: Future | None = self.pool.submit(read, tasks[0]) if tasks else None

    def next(self, task: tuple) -> list[torch.Tensor]:
        if self.index >= len(self.tasks) or self.tasks[self.index] != task:
            raise RuntimeError(f"merge read order broken at {task}")
        result = self.ahead.result()
        self.index += 1
        self.ahead = self.pool.submit(self.read, self.tasks[self.index]) if self.index < len(self.tasks) else None
        return result

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()
        self.pool.shutdown(wait=True)


class _Stack:
    """One reusable float64 buffer for the N × len stacks (no page faults per key: it is touched once)."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0, dtype=ACCUMULATION_DTYPE)

    def view(self, rows: int, length: int) -> torch.Tensor:
        if self.buffer.numel() < rows * length:
            self.release()  # the old buffer goes before the new one comes
            self.buffer = torch.empty(rows * length, dtype=ACCUMULATION_DTYPE)
        return self.buffer[: rows * length].view(rows, length)

    def release(self) -> None:
        self.buffer = torch.empty(0, dtype=ACCUMULATION_DTYPE)


def _run(plan: Plan, base: SafetensorsSource, models: list[SafetensorsSource], donor: SafetensorsSource | None,
         output_path: str, params: MergeParams, method: Method, meta: dict, budget: int,
         progress: Progress | None) -> None:
    count = len(models)
    names = [m.name for m in models]
    stored = {k: max(element_size(m.info[k].dtype) for m in (base, *models)) for k in plan.merged}
    chunks: dict[str, list[tuple[int, int]]] = {}
    for key in plan.merged:
        numel = base.info[key].numel
        length = chunk_length(numel, count, stored[key], budget)
        chunks[key] = [(a, min(a + length, numel)) for a in range(0, max(numel, 1), length)]
    whole = method.aggregate.accumulate is None
    split = [k for k in plan.merged if len(chunks[k]) > 1]
    for note in plan.notes:
        log.info("merge: %s", note)
    log.info("merge: %s of %d models onto %s: %d keys merged, %d of them in chunks (memory budget %.1f GiB) → %s",
             params.method, count, base.name, len(plan.merged), len(split), budget / 2**30, output_path)

    with SafetensorsStreamWriter(output_path, plan.specs, meta) as writer:
        tasks: list[tuple] = []
        for key in writer.order:
            if plan.origin[key] != MERGE:
                tasks.append(("copy", key))
                continue
            passes = 1 if whole or len(chunks[key]) == 1 else 2
            tasks += [("merge", key, a, b) for _ in range(passes) for a, b in chunks[key]]

        def read(task: tuple) -> list[torch.Tensor]:
            if task[0] == "copy":
                source = donor if plan.origin[task[1]] == DONOR else base
                return [source.read(task[1])]
            _, key, a, b = task
            return [base.read_range(key, a, b)] + [m.read_range(key, a, b) for m in models]

        work = {t: (count + 1) * (t[3] - t[2]) if t[0] == "merge" else _numel(plan.specs[t[1]][1]) for t in tasks}
        eta = _Eta(sum(work[t] for t in tasks), progress)
        reader = _Reader(tasks, read)
        stack = _Stack()
        iterations: list[int] = []
        try:
            for key in writer.order:
                if plan.origin[key] != MERGE:
                    tensor = reader.next(("copy", key))[0]
                    source = donor if plan.origin[key] == DONOR else base
                    check_finite(tensor, source.name, key)
                    writer.write(key, tensor)
                    eta.advance(work[("copy", key)], key)
                    continue
                ctx = KeyContext(key, base.info[key].numel, count, plan.specs[key][0], params)
                _merge_key(ctx, method, chunks[key], reader, stack, writer, names, base, models, eta, work)
                iterations += ctx.iterations
        finally:
            reader.close()
    if iterations:
        log.info("merge: Weiszfeld iterations per key: mean %.1f, max %d (stop rule %s, at most %d)",
                 sum(iterations) / len(iterations), max(iterations), params.stop, params.max_iterations)


def check_finite(tensor: torch.Tensor, file: str, key: str) -> None:
    """Refuse NaN/±inf (a sum is finite exactly when every element is, for float64 sums of finite values)."""
    if not tensor.is_floating_point():
        return
    if not math.isfinite(float(tensor.sum(dtype=ACCUMULATION_DTYPE))) and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise LuneFormatError(f"{file}: tensor {key!r} holds {bad} non-finite value(s) (NaN or ±inf); nothing was "
                              "written. The file is damaged or was saved from a diverged training run: leave it out "
                              "of the merge.")


def _prepare(ctx: KeyContext, method: Method, models: list[SafetensorsSource], base: SafetensorsSource) -> None:
    """The transform's whole-tensor step (TIES thresholds) for a key merged in chunks: one model at a time."""
    theta0 = base.read(ctx.key).reshape(-1).to(ACCUMULATION_DTYPE)
    for i, model in enumerate(models):
        tau = model.read(ctx.key).reshape(-1).to(ACCUMULATION_DTYPE)
        method.transform.prepare(tau.sub_(theta0), i, ctx)
        del tau


def _build(ctx: KeyContext, method: Method, raws: list[torch.Tensor], start: int, stack: _Stack,
           names: list[str], base_name: str, prepare: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀ chunk in float64, the N × len stack of transformed, filtered terms) for one chunk."""
    theta0 = raws[0].to(ACCUMULATION_DTYPE)
    check_finite(theta0, base_name, ctx.key)
    rows = stack.view(ctx.count, theta0.numel())
    for i, raw in enumerate(raws[1:]):
        row = rows[i]
        row.copy_(raw)  # a copy into our own buffer: the stored tensor is never altered
        check_finite(row, names[i], ctx.key)
        row.sub_(theta0)
        if method.transform is not None:
            if prepare and method.transform.prepare is not None:
                method.transform.prepare(row, i, ctx)
            method.transform.apply(row, i, start, ctx)
    if method.vote is not None:
        apply_filter(rows, method.vote(rows))
    return theta0, rows


def _merge_key(ctx: KeyContext, method: Method, chunks: list[tuple[int, int]], reader: _Reader, stack: _Stack,
               writer: SafetensorsStreamWriter, names: list[str], base: SafetensorsSource,
               models: list[SafetensorsSource], eta: _Eta, work: dict) -> None:
    single = len(chunks) == 1
    if not single and method.transform is not None and method.transform.prepare is not None:
        stack.release()  # the whole-tensor step holds whole float64 tensors: not beside the budget-sized stack
        _prepare(ctx, method, models, base)
    aggregate = method.aggregate
    kept = None
    if aggregate.accumulate is not None:
        for a, b in chunks:
            theta0, rows = _build(ctx, method, reader.next(("merge", ctx.key, a, b)), a, stack, names, base.name,
                                  single)
            aggregate.accumulate(rows, theta0, ctx)
            kept = (theta0, rows) if single else None
            if not single:
                eta.advance(work[("merge", ctx.key, a, b)], ctx.key)
        aggregate.solve(ctx)
    for a, b in chunks:
        if kept is not None:
            theta0, rows = kept
        else:
            theta0, rows = _build(ctx, method, reader.next(("merge", ctx.key, a, b)), a, stack, names, base.name,
                                  single)
        delta = aggregate.combine(rows, ctx)
        writer.write_part(ctx.key, theta0.add_(delta, alpha=ctx.params.strength).to(ctx.out_dtype))
        eta.advance(work[("merge", ctx.key, a, b)], ctx.key)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
