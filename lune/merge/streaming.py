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
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ..errors import LuneError, MissingComponentError, UnsupportedModelError
from ..safe_write import SafetensorsStreamWriter, element_size
from .methods import ACCUMULATION_DTYPE, METHODS, KeyContext, MergeParams, merged_delta
from .recipe import RECIPE_METADATA_KEY, build_recipe, reusable
from .sources import CLIP_VAE_PREFIXES, SafetensorsSource, TemporaryCopies, open_source
from .terms import ResidentTerms, StreamedTerms, check_finite

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


def plan_keys(base: SafetensorsSource, models: Sequence[SafetensorsSource],
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
                "layouts.")
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
        raise UnsupportedModelError(f"No weight is held by the base and every model ({', '.join(m.name for m in models)}"
                                    "); nothing to merge. Merge models of one architecture.")
    return plan


def resident_bytes(numel: int, count: int, stored: torch.dtype) -> int:
    """Memory a resident key needs: the float64 stack, θ₀, median/accumulator/scratch, and the stored tensors
    of this key and of the next one (read ahead)."""
    return (count + 4) * numel * element_size(ACCUMULATION_DTYPE) + 2 * (count + 1) * numel * element_size(stored)


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


def _run(plan: Plan, base: SafetensorsSource, models: list[SafetensorsSource], donor: SafetensorsSource | None,
         output_path: str, params: MergeParams, method, meta: dict, budget: int, progress: Progress | None) -> None:
    count = len(models)
    names = [m.name for m in models]
    resident = {k for k in plan.merged
                if resident_bytes(base.info[k].numel, count, max((m.info[k].dtype for m in models),
                                                                  key=element_size)) <= budget}
    streamed = len(plan.merged) - len(resident)
    for note in plan.notes:
        log.info("merge: %s", note)
    log.info("merge: %s of %d models onto %s: %d keys merged (%d held in memory, %d streamed; memory budget "
             "%.1f GiB) → %s", params.method, count, base.name, len(plan.merged), len(resident), streamed,
             budget / 2**30, output_path)

    def work(key: str) -> int:
        numel = _numel(plan.specs[key][1])
        return (count + 1) * numel if plan.origin[key] == MERGE else numel

    def read_all(key: str) -> list[torch.Tensor]:
        return [base.read(key)] + [m.read(key) for m in models]

    iterations: list[int] = []
    with SafetensorsStreamWriter(output_path, plan.specs, meta) as writer, ThreadPoolExecutor(1) as pool:
        eta = _Eta(sum(work(k) for k in writer.order), progress)
        ahead: tuple[str, Future] | None = None
        for index, key in enumerate(writer.order):
            origin = plan.origin[key]
            if origin == MERGE and key in resident:
                if ahead is not None and ahead[0] == key:
                    raws = ahead[1].result()
                else:
                    raws = read_all(key)
                ahead = None
                following = writer.order[index + 1] if index + 1 < len(writer.order) else None
                if following in resident:
                    ahead = (following, pool.submit(read_all, following))
                theta0 = raws[0]
                check_finite(theta0, base.name, key)
                ctx = KeyContext(key, theta0.to(ACCUMULATION_DTYPE), theta0.dtype, params)
                terms = ResidentTerms(raws[1:], names, ctx, method)
                del raws
            elif origin == MERGE:
                theta0 = base.read(key)
                check_finite(theta0, base.name, key)
                ctx = KeyContext(key, theta0.to(ACCUMULATION_DTYPE), theta0.dtype, params)
                terms = StreamedTerms(lambda i, k=key: models[i].read(k), names, ctx, method)
            else:
                source = donor if origin == DONOR else base
                tensor = source.read(key)
                check_finite(tensor, source.name, key)
                writer.write(key, tensor)
                eta.advance(work(key), key)
                continue
            delta = merged_delta(method, terms, ctx)
            del terms
            writer.write(key, torch.add(ctx.base, delta, alpha=params.strength).to(ctx.out_dtype))
            iterations += ctx.iterations
            del delta, ctx, theta0
            eta.advance(work(key), key)
    if iterations:
        log.info("merge: Weiszfeld iterations per key: mean %.1f, max %d (stop rule %s, at most %d)",
                 sum(iterations) / len(iterations), max(iterations), params.stop, params.max_iterations)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
