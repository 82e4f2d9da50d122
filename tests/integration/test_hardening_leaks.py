"""Nothing leaks between graphs, over HTTP.

* A patched Lune model and a stock SD1.5 model (``CheckpointLoaderSimple`` on the same tiny single file), used in
  alternating queued prompts and side by side in one prompt: every stock latent equals the same graph run on a
  ComfyUI started WITHOUT the pack (its own base directory, no custom_nodes/ComfyUI-Lune).
* Shift 2 → 3 → 2 via LuneShift on one loaded (cached) model equals fresh loads at those shifts.
* Cache correctness: replacing a model file under the same name makes the next prompt load the new file —
  also when the replacement has the same size and mtime (``cp -p`` / ``rsync -t``).
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from testbed.fixtures.bad_inputs import read_latent
from testbed.fixtures.sd15_files import build_sd15_fixtures
from testbed.env import place_model
from testbed.hardening import (
    describe_failure,
    lune_latent_graph,
    new_base,
    output_files,
    output_latent,
    start_server,
    stock_graph,
    submit,
    succeeded,
    wait,
)

pytestmark = pytest.mark.comfy

SEEDS = (3, 4)
STOCK_SAMPLING = {"sampler": "euler", "scheduler": "normal", "steps": 3}


@pytest.fixture(scope="module")
def stock_reference(tiny_sd15, tiny_models, tmp_path_factory):
    """Latents of the stock graph on a ComfyUI without the pack, per seed (same file, same name)."""
    root = tmp_path_factory.mktemp("no_pack")
    base = new_base(root / "base", with_pack=False,
                    models={"checkpoints": {tiny_models["single_file"]: tiny_sd15.single_file}})
    assert not (base / "custom_nodes" / "ComfyUI-Lune").exists()
    server = start_server(base)
    try:
        assert "LuneModelLoader" not in server.get("/object_info"), "the reference server must not load the pack"
        out = {}
        for seed in SEEDS:
            entry = server.run(stock_graph(tiny_models["single_file"], seed=seed, prefix="ref", **STOCK_SAMPLING))
            assert succeeded(entry), describe_failure(entry)
            out[seed] = output_latent(base, entry)
        return out
    finally:
        server.stop()


def _run_all(server, prompts: list[dict]) -> list[dict]:
    """Queue every prompt first (they run back to back on one worker), then collect the history entries."""
    ids = []
    for p in prompts:
        prompt_id, body = submit(server, p)
        assert prompt_id, body
        ids.append(prompt_id)
    entries = [wait(server, i) for i in ids]
    for e in entries:
        assert succeeded(e), describe_failure(e)
    return entries


def test_stock_model_sampling_is_never_changed(comfy_server, comfy_base, tiny_models, stock_reference):
    name = tiny_models["single_file"]
    prompts, kinds = [], []
    for round_ in range(2):
        for seed in SEEDS:
            prompts.append(stock_graph(name, seed=seed, prefix="leak_stock", **STOCK_SAMPLING))
            kinds.append(("stock", seed))
            prompts.append(lune_latent_graph(name, variant=("lune", "lune-flux")[round_], seed=seed,
                                             sampler=("euler", "lune_euler")[round_],
                                             scheduler=("simple", "lune_flow")[round_], prefix="leak_lune"))
            kinds.append(("lune", seed))
    # one prompt holding both: a Lune branch and a stock branch from the same file
    both = lune_latent_graph(name, seed=SEEDS[0], prefix="leak_both_lune")
    for k, node in stock_graph(name, seed=SEEDS[0], prefix="leak_both_stock", **STOCK_SAMPLING).items():
        inputs = {i: ([f"x{v[0]}", v[1]] if isinstance(v, list) else v) for i, v in node["inputs"].items()}
        both[f"x{k}"] = {"class_type": node["class_type"], "inputs": inputs}
    prompts.append(both)
    kinds.append(("both", SEEDS[0]))

    entries = _run_all(comfy_server, prompts)
    for (kind, seed), entry in zip(kinds, entries):
        if kind == "stock":
            assert torch.equal(output_latent(comfy_base, entry), stock_reference[seed]), \
                f"stock latent (seed {seed}) differs from ComfyUI without the pack"
        elif kind == "lune":
            lune = output_latent(comfy_base, entry)
            assert not torch.allclose(lune, stock_reference[seed]), "the Lune graph was sampled like the stock one"
        else:
            stock = [p for p in output_files(comfy_base, entry, "latents") if p.name.startswith("leak_both_stock")]
            assert len(stock) == 1 and len(output_files(comfy_base, entry, "latents")) == 2
            assert torch.equal(read_latent(stock[0]), stock_reference[seed]), \
                "the stock branch of a mixed prompt was changed"


def _cached_nodes(entry: dict) -> set[str]:
    return {n for event, data in entry["status"]["messages"] if event == "execution_cached" for n in data["nodes"]}


def test_shift_2_3_2_on_one_loaded_model_equals_fresh_loads(comfy_server, comfy_base, tiny_models, tiny_sd15):
    name = tiny_models["single_file"]
    fresh_name = place_model(comfy_base, "checkpoints", tiny_sd15.single_file, "leak_fresh.safetensors")
    common = dict(variant="lune-flux", seed=7, steps=3)
    chained = [lune_latent_graph(name, shifts=(s,), prefix=f"leak_shift{s}", **common) for s in (2.0, 3.0, 2.0)]
    in_one = lune_latent_graph(name, shifts=(3.0, 2.0), prefix="leak_shift_chain", **common)
    fresh = [lune_latent_graph(fresh_name, loader_shift=s, prefix=f"leak_fresh{s}", **common) for s in (2.0, 3.0)]
    entries = _run_all(comfy_server, [*chained, in_one, *fresh])
    s2a, s3, s2b, chain, f2, f3 = (output_latent(comfy_base, e) for e in entries)
    assert "1" in _cached_nodes(entries[1]) and "1" in _cached_nodes(entries[2]), \
        "the loader must be reused (cached) across the shift prompts"
    assert torch.equal(s2a, f2) and torch.equal(s2b, f2), "shift 2 after shift 3 differs from a fresh load at 2"
    assert torch.equal(s3, f3), "shift 3 on the loaded model differs from a fresh load at 3"
    assert torch.equal(chain, f2), "LuneShift 3 → 2 must replace, not stack"
    assert not torch.equal(s2a, s3), "shift had no effect"


def test_replaced_model_file_is_reloaded(comfy_server, comfy_base, tiny_sd15, tmp_path):
    """Same model_name, new bytes: the next prompt loads the new file (LuneModelLoader.IS_CHANGED)."""
    a = tiny_sd15.single_file
    b = build_sd15_fixtures(None, "tiny", seed=1).single_file
    assert a.stat().st_size == b.stat().st_size  # same layout: only the content differs
    target = tmp_path / "swap.safetensors"
    shutil.copyfile(a, target)
    name = place_model(comfy_base, "checkpoints", target, "leak_swap.safetensors")
    fresh_b = place_model(comfy_base, "checkpoints", b, "leak_fresh_b.safetensors")

    def run(model_name: str, prefix: str) -> torch.Tensor:
        entry = comfy_server.run(lune_latent_graph(model_name, seed=5, prefix=prefix))
        assert succeeded(entry), describe_failure(entry)
        return output_latent(comfy_base, entry)

    def replace_with(src, keep_stat_of=None):
        staged = tmp_path / "staged.safetensors"
        shutil.copyfile(src, staged)
        if keep_stat_of is not None:  # cp -p / rsync -t: the replacement keeps the old size and mtime
            st = os.stat(keep_stat_of)
            os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(staged, target)

    latent_a = run(name, "leak_swap_a")
    replace_with(b)
    latent_swapped = run(name, "leak_swap_b")
    latent_b = run(fresh_b, "leak_fresh_b")
    assert not torch.equal(latent_swapped, latent_a), "the replaced file was not reloaded"
    assert torch.equal(latent_swapped, latent_b), "the reloaded file does not match a fresh run on it"

    # the same graph again: everything (loader included) comes from ComfyUI's cache, so only IS_CHANGED can
    # notice the next replacement
    assert torch.equal(run(name, "leak_swap_b"), latent_b)
    before = (target.stat().st_size, target.stat().st_mtime_ns)
    replace_with(a, keep_stat_of=target)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == before
    latent_back = run(name, "leak_swap_back")
    assert torch.equal(latent_back, latent_a), "a replacement with the same size and mtime was not reloaded"
