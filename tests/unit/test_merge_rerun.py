"""Re-running a merge: the output records its recipe; the same recipe reuses the file, another one is refused
naming what differs, and nothing is ever overwritten."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfyui_lune.lune.errors import LuneError
from comfyui_lune.lune.merge import RECIPE_METADATA_KEY, MergeParams, merge_models


def _model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(20, 10, generator=g), "b": torch.randn(10, generator=g)}


@pytest.fixture()
def inputs(tmp_path):
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        save_file(_model(seed), tmp_path / f"{name}.safetensors")
    return tmp_path, str(tmp_path / "base.safetensors"), [str(tmp_path / "a.safetensors"),
                                                          str(tmp_path / "b.safetensors")]


def _snapshot(path):
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def test_same_recipe_reuses_the_file_without_merging(inputs, caplog):
    folder, base, models = inputs
    out = folder / "merged.safetensors"
    params = MergeParams(method="tgmd", max_iterations=5)
    merge_models(base, models, str(out), params)
    before = _snapshot(out)
    caplog.set_level(logging.INFO, logger="lune")
    assert merge_models(base, models, str(out), params) == str(out)
    assert _snapshot(out) == before
    assert any("reused without merging again" in r.getMessage() for r in caplog.records)
    assert not any("keys merged" in r.getMessage() for r in caplog.records), "it merged again"
    with safe_open(out, framework="pt") as f:
        recipe = json.loads(f.metadata()[RECIPE_METADATA_KEY])
    assert [m["name"] for m in recipe["models"]] == ["a.safetensors", "b.safetensors"]
    assert all(m["stamp"].startswith("crc32:") and m["size"] > 0 for m in recipe["models"])
    # parameters the method does not read are not part of the recipe (ties ignores the seed)
    merge_models(base, models, str(folder / "t.safetensors"), MergeParams(method="ties", seed=1))
    merge_models(base, models, str(folder / "t.safetensors"), MergeParams(method="ties", seed=2))


@pytest.mark.parametrize("change,words", [
    ("params", "params: "),
    ("method", 'method: "tgmd" there, "ties" now'),
    ("order", "model 1: a.safetensors"),
    ("content", "model 2: b.safetensors"),
    ("count", "models: 2 there, 1 now"),
])
def test_another_recipe_under_the_same_name_is_refused(inputs, change, words):
    folder, base, models = inputs
    out = folder / "merged.safetensors"
    params = MergeParams(method="tgmd", max_iterations=5)
    merge_models(base, models, str(out), params)
    before = _snapshot(out)
    if change == "params":
        params = MergeParams(method="tgmd", max_iterations=6)
    elif change == "method":
        params = MergeParams(method="ties")
    elif change == "order":
        models = list(reversed(models))
    elif change == "content":  # same name and size, other bytes
        save_file(_model(7), folder / "b.safetensors")
    else:
        models = models[:1]
    with pytest.raises(LuneError, match="already exists with another recipe") as info:
        merge_models(base, models, str(out), params)
    print(info.value)
    assert words in str(info.value)
    assert "nothing was overwritten" in str(info.value)
    assert _snapshot(out) == before
    assert sorted(os.listdir(folder)) == ["a.safetensors", "b.safetensors", "base.safetensors", "merged.safetensors"]


def test_a_file_that_is_not_a_merge_is_never_replaced(inputs):
    folder, base, models = inputs
    out = folder / "mine.safetensors"
    save_file(_model(5), out)
    before = _snapshot(out)
    with pytest.raises(LuneError, match="not a Lune merge"):
        merge_models(base, models, str(out), MergeParams(method="ties"))
    assert _snapshot(out) == before
