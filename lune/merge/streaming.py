"""``merge_models``: base + N models → a new ``.safetensors``, one key at a time (see ``methods`` for the math).

Order of work: open every input and check it against the base (nothing is written if one does not fit), then
for each key of the base, in name order: read θ₀, merge the key over the models (keys every model holds,
floating-point only), cast to the base tensor's dtype, append it to the output. Keys some model lacks and
non-float tensors (e.g. CLIP ``position_ids``) are copied from the base unchanged.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Sequence

from ..errors import LuneError
from .methods import ACCUMULATION_DTYPE, KeyMerge, MergeParams
from .sources import ModelSource, check_compatible, open_source
from .writer import SafetensorsStreamWriter

log = logging.getLogger("lune")

RECIPE_METADATA_KEY = "lune.merge.recipe"
Progress = Callable[[int, int, str], None]  # (keys done, keys total, current key)


def _open_inputs(base_path: str, model_paths: Sequence[str]) -> tuple[ModelSource, list[ModelSource], list[str]]:
    """Open and check everything; returns (base, models, keys merged in order)."""
    base = open_source(base_path)
    models = [open_source(p) for p in model_paths]
    merged = set(base.info)
    for model in models:
        merged &= set(check_compatible(base, model))
    merged = {k for k in merged if base.info[k].dtype.is_floating_point}
    copied = [k for k in base.info if k not in merged]
    if copied:
        log.info("merge: %d of %d tensors are copied from the base (not in every model, or not float)",
                 len(copied), len(base.info))
    return base, models, sorted(merged)


def recipe(params: MergeParams, base_path: str, model_paths: Sequence[str]) -> dict:
    return {"method": params.method, "params": params.used(), "base": os.path.basename(base_path),
            "models": [os.path.basename(p) for p in model_paths]}


def merge_models(base_path: str, model_paths: Sequence[str], output_path: str, params: MergeParams,
                 progress: Progress | None = None, metadata: dict[str, str] | None = None) -> str:
    """Merge ``model_paths`` onto ``base_path`` into the new file ``output_path`` (refused if it exists).

    Peak memory ≈ a few float64 copies of the largest tensor (≈ 0.3 GB each for SD1.5's CLIP token embedding),
    whatever the number of models. ``progress(done, total, key)`` is called after every key.
    """
    params.validate()
    if not model_paths:
        raise LuneError("No models to merge: list at least one model besides the base.")
    if not output_path.endswith(".safetensors"):
        raise LuneError(f"The output {output_path!r} must end in .safetensors.")
    if os.path.lexists(output_path):
        raise LuneError(f"{output_path} already exists; nothing was overwritten. Choose another output name.")
    base, models, merged_keys = _open_inputs(base_path, model_paths)
    merged = set(merged_keys)
    keys = sorted(base.info)
    infos = {k: base.info[k] for k in keys}
    meta = {RECIPE_METADATA_KEY: json.dumps(recipe(params, base_path, model_paths)), **(metadata or {})}
    started = time.perf_counter()
    log.info("merge: %s of %d models onto %s, %d of %d keys merged → %s", params.method, len(models), base.name,
             len(merged), len(keys), output_path)
    try:
        with SafetensorsStreamWriter(output_path, infos, meta) as writer:
            for done, key in enumerate(keys, 1):
                theta0 = base.read(key)
                if key in merged:
                    merge = KeyMerge(key, theta0.to(ACCUMULATION_DTYPE), lambda i, k=key: models[i].read(k),
                                     len(models), params)
                    theta0 = merge.result().to(infos[key].dtype)
                writer.write(key, theta0)
                del theta0
                if progress is not None:
                    progress(done, len(keys), key)
    finally:
        for source in (base, *models):
            source.close()
    log.info("merge: wrote %s in %.1f s", output_path, time.perf_counter() - started)
    return output_path

