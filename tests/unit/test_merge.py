"""lune.merge on small random checkpoints against a naive in-memory float64 implementation written here.

The reference stacks every model's task vectors per key (N × tensor) and applies the published formulas
directly (TIES arXiv 2306.01708 via ``topk``; Weiszfeld arXiv 1912.13445 on the stack); the library streams one
model at a time. Run with ``-s`` to see the measured errors.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfyui_lune.lune.errors import LuneError, LuneFormatError, UnsafeCheckpointError, UnsupportedModelError
from comfyui_lune.lune.merge import RECIPE_METADATA_KEY, MergeParams, keep_mask, merge_models
from comfyui_lune.lune.merge.methods import MASK_BLOCK
from comfyui_lune.lune.merge.__main__ import main as cli_main
from testbed.fixtures.sd15_files import write_malicious_pt

RTOL = 1e-12  # float64 end to end: only summation order differs between streaming and stacking
# Weiszfeld stopped by its objective test: the objective is flat to second order at the median, so where the
# stop happens depends on rounding, and the median is only determined to ~sqrt(2^-52) ≈ 1.5e-8 relative there.
# Runs that do not stop early (few iterations) are held to RTOL.
CONVERGED_MEDIAN_RTOL = 1e-6
SHAPES = {"blocks.0.weight": (6, 5), "blocks.0.conv.weight": (4, 3, 3, 3), "blocks.0.bias": (11,),
          "scale": (), "emb.weight": (40, 8)}
N_MODELS = 4


def random_model(seed: int, dtype=torch.float64, base: dict | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for key, shape in SHAPES.items():
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        out[key] = (noise if base is None else base[key].double() + 0.1 * noise).to(dtype)
    return out


@pytest.fixture()
def files(tmp_path) -> tuple[Path, list[Path], dict, list[dict]]:
    base = random_model(0)
    base_file = dict(base, position_ids=torch.arange(7, dtype=torch.int64).reshape(1, 7),
                     only_in_base=torch.ones(3, dtype=torch.float64))
    save_file(base_file, tmp_path / "base.safetensors")
    models, paths = [], []
    for i in range(1, N_MODELS + 1):
        m = random_model(i, base=base)
        m["position_ids"] = torch.arange(7, dtype=torch.int64).reshape(1, 7) + i  # non-float: never merged
        models.append(m)
        paths.append(tmp_path / f"model{i}.safetensors")
        save_file(m, paths[-1])
    return tmp_path / "base.safetensors", paths, base, models


# ------------------------------------------------------------------------------------ naive reference (stacking)

def naive_merge(base: dict, models: list[dict], method: str, density=1.0, strength=1.0, iterations=100):
    out = {}
    for key in SHAPES:
        b = base[key].double()
        tau = torch.stack([m[key].double() - b for m in models]).reshape(len(models), -1)
        if method == "task_arithmetic":
            merged = tau.mean(0)
        elif method in ("ties", "ties_soup"):
            if method == "ties":
                k = max(1, math.ceil(density * tau.shape[1]))
                keep = torch.zeros_like(tau, dtype=torch.bool)
                keep.scatter_(1, tau.abs().topk(k, dim=1).indices, True)
                tau = tau * keep
                gamma = torch.sign(tau.sum(0))
            else:
                gamma = torch.sign(torch.sign(tau).sum(0))
            agree = (torch.sign(tau) == gamma) & (gamma != 0)
            merged = (tau * agree).sum(0) / agree.sum(0).clamp(min=1)
        else:  # geometric_median, tgmd without dropout
            if method == "tgmd":
                gamma = torch.sign(torch.sign(tau).sum(0))
                tau = tau * (torch.sign(tau) == gamma)
            merged = weiszfeld(tau, iterations)
        out[key] = b + strength * merged.reshape(b.shape)
    return out


def weiszfeld(points: torch.Tensor, iterations: int, eps=1e-6, ftol=1e-20) -> torch.Tensor:
    median = points.mean(0)
    previous = None
    for _ in range(iterations):
        distances = (points - median).norm(dim=1)
        objective = float(distances.sum())
        if previous is not None and abs(previous - objective) <= ftol * objective:
            break
        previous = objective
        weights = 1.0 / distances.clamp(min=eps)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median


def relative_error(out: dict, ref: dict, base: dict) -> float:
    worst = 0.0
    for key in SHAPES:
        ref_delta = ref[key] - base[key].double()
        scale = float(ref_delta.abs().max()) or 1.0
        worst = max(worst, float((out[key].double() - ref[key]).abs().max()) / scale)
    return worst


# ------------------------------------------------------------------------------------------------- exactness

EXACT_CASES = [
    ("task_arithmetic", {"strength": 0.7}),
    ("ties", {"density": 0.3, "strength": 1.0}),
    ("ties", {"density": 1.0, "strength": 1.2}),
    ("ties_soup", {}),
    ("geometric_median", {}),
    ("geometric_median", {"max_iterations": 3}),
    ("tgmd", {"drop_rate": 0.0}),
    ("tgmd", {"drop_rate": 0.0, "max_iterations": 4, "strength": 0.5}),
]


HELD, STREAMED = 2.0, 1e-9  # memory budgets (GiB): every key held in memory / every key streamed pass by pass


@pytest.mark.parametrize("budget", [HELD, STREAMED], ids=["held", "streamed"])
@pytest.mark.parametrize("method,options", EXACT_CASES, ids=[f"{m}-{o}" for m, o in EXACT_CASES])
def test_merge_equals_naive_float64(files, tmp_path, method, options, budget):
    base_path, paths, base, models = files
    params = MergeParams(method=method, stop="reference", **options)
    out_path = tmp_path / "merged.safetensors"
    seen = []
    merge_models(str(base_path), [str(p) for p in paths], str(out_path), params,
                 progress=lambda done, total, key: seen.append((done, total)), memory_budget_gib=budget)
    out = load_file(out_path)
    ref = naive_merge(base, models, method, density=params.density, strength=params.strength,
                      iterations=params.max_iterations)
    err = relative_error(out, ref, base)
    converged = method in ("geometric_median", "tgmd") and params.max_iterations > 10
    rtol = CONVERGED_MEDIAN_RTOL if converged else RTOL
    print(f"{method} {options}: max|Δ| / max|ref τₘ| = {err:.2e} (rtol {rtol:.0e})")
    assert err <= rtol
    # changes happened, copies did not
    assert any(not torch.equal(out[k], base[k]) for k in SHAPES)
    assert torch.equal(out["position_ids"], torch.arange(7).reshape(1, 7))
    assert torch.equal(out["only_in_base"], torch.ones(3, dtype=torch.float64))
    assert len(seen) == len(SHAPES) + 2 and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_ties_density_trims_each_model_to_its_top_k(files, tmp_path):
    """One model: TIES keeps exactly ⌈density·n⌉ elements of each tensor, the largest |τ|."""
    base_path, paths, base, models = files
    out_path = tmp_path / "one.safetensors"
    merge_models(str(base_path), [str(paths[0])], str(out_path), MergeParams(method="ties", density=0.25))
    out = load_file(out_path)
    for key in SHAPES:
        delta = (out[key] - base[key]).reshape(-1)
        tau = (models[0][key] - base[key]).reshape(-1)
        k = max(1, math.ceil(0.25 * tau.numel()))
        assert int((delta != 0).sum()) == k
        assert torch.equal(delta[delta != 0], tau[delta != 0])
        dropped = tau.abs()[delta == 0]
        if dropped.numel():
            assert float(dropped.max()) <= float(tau.abs()[delta != 0].min())


# -------------------------------------------------------------------------------------------- dropout methods

def big_pair(tmp_path: Path, count: int) -> tuple[Path, list[Path], dict, list[dict]]:
    g = torch.Generator().manual_seed(7)
    base = {"w": torch.randn(300, 200, generator=g, dtype=torch.float64)}
    save_file(base, tmp_path / "b.safetensors")
    models, paths = [], []
    for i in range(count):
        models.append({"w": base["w"] + torch.randn(300, 200, generator=g, dtype=torch.float64)})
        paths.append(tmp_path / f"m{i}.safetensors")
        save_file(models[-1], paths[-1])
    return tmp_path / "b.safetensors", paths, base, models


@pytest.mark.parametrize("method", ["dare", "drop"])
def test_dropout_keeps_one_minus_p_and_rescales_as_specified(tmp_path, method):
    p = 0.3
    base_path, paths, base, models = big_pair(tmp_path, 1)
    out_path = tmp_path / f"{method}.safetensors"
    merge_models(str(base_path), [str(paths[0])], str(out_path), MergeParams(method=method, drop_rate=p, seed=5))
    delta = load_file(out_path)["w"] - base["w"]
    tau = models[0]["w"] - base["w"]
    kept = delta != 0
    fraction = float(kept.double().mean())
    sigma = math.sqrt(p * (1 - p) / delta.numel())
    print(f"{method}: kept {fraction:.4f}, expected {1 - p} ± {4 * sigma:.4f}")
    assert abs(fraction - (1 - p)) <= 4 * sigma
    scale = 1 / (1 - p) if method == "dare" else 1.0
    err = float((delta[kept] - scale * tau[kept]).abs().max()) / float(tau.abs().max())
    assert err <= RTOL
    # the mask is the documented one: keep_mask(seed, model index, key)
    assert torch.equal(kept, keep_mask(5, 0, "w", tau.shape, p))


def test_dropout_reproduces_for_a_seed_and_depends_on_model_order(tmp_path):
    base_path, paths, _, _ = big_pair(tmp_path, 2)
    params = MergeParams(method="tgmd", drop_rate=0.2, seed=11, max_iterations=5)

    def run(name, model_paths, p=params):
        out = tmp_path / name
        merge_models(str(base_path), [str(x) for x in model_paths], str(out), p)
        return load_file(out)["w"]

    first, again = run("r1.safetensors", paths), run("r2.safetensors", paths)
    assert torch.equal(first, again)
    assert not torch.equal(first, run("r3.safetensors", paths, MergeParams(method="tgmd", drop_rate=0.2, seed=12,
                                                                         max_iterations=5)))
    # masks follow the position in the list (documented): another order draws other masks
    assert not torch.equal(first, run("r4.safetensors", list(reversed(paths))))


# ---------------------------------------------------------------------------------------- dtypes and metadata

def test_output_keeps_base_dtypes_and_records_the_recipe(tmp_path):
    base = random_model(0, dtype=torch.float16)
    base["clip.position_ids"] = torch.arange(5).reshape(1, 5)
    save_file(base, tmp_path / "base.safetensors")
    save_file(random_model(1, dtype=torch.bfloat16, base=base), tmp_path / "m1.safetensors")
    torch.save(random_model(2, dtype=torch.float32, base=base), tmp_path / "m2.pt")  # a plain-state-dict .pt
    out_path = tmp_path / "out.safetensors"
    merge_models(str(tmp_path / "base.safetensors"), [str(tmp_path / "m1.safetensors"), str(tmp_path / "m2.pt")],
                 str(out_path), MergeParams(method="ties_soup"))
    out = load_file(out_path)
    assert {k: v.dtype for k, v in out.items()} == {k: v.dtype for k, v in base.items()}
    assert torch.equal(out["clip.position_ids"], base["clip.position_ids"])
    with safe_open(out_path, framework="pt") as f:
        recipe = json.loads(f.metadata()[RECIPE_METADATA_KEY])
    assert recipe["method"] == "ties_soup" and recipe["params"] == {"strength": 1.0}
    assert recipe["base"]["name"] == "base.safetensors"
    assert [m["name"] for m in recipe["models"]] == ["m1.safetensors", "m2.pt"]
    assert recipe["models"][1]["size"] == os.path.getsize(tmp_path / "m2.pt")
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == [], "temporary copy of the .pt left behind"


# ------------------------------------------------------------------------------------------------- bad inputs

def assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert set(os.listdir(folder)) == before, "a file (or a temporary) was left behind"


def test_refusals_name_the_problem_and_write_nothing(files, tmp_path):
    base_path, paths, base, _ = files
    out = tmp_path / "out.safetensors"
    mismatched = dict(random_model(9, base=base), **{"blocks.0.bias": torch.zeros(12, dtype=torch.float64)})
    save_file(mismatched, tmp_path / "shape.safetensors")
    save_file(dict(random_model(9, base=base), extra=torch.zeros(2)), tmp_path / "extra.safetensors")
    with_nan = random_model(9, base=base)
    with_nan["blocks.0.weight"][2, 3] = float("nan")
    save_file(with_nan, tmp_path / "nan.safetensors")
    write_malicious_pt(tmp_path / "evil.pt", tmp_path / "pwned")
    before = set(os.listdir(tmp_path))
    good = [str(p) for p in paths]
    cases = [
        (good + [str(tmp_path / "shape.safetensors")], UnsupportedModelError, "'blocks.0.bias' has shape [12]"),
        (good + [str(tmp_path / "extra.safetensors")], UnsupportedModelError, "key 'extra'"),
        (good + [str(tmp_path / "nan.safetensors")], LuneFormatError,
         "nan.safetensors: tensor 'blocks.0.weight' holds 1 non-finite"),
        (good + [str(tmp_path / "missing.safetensors")], LuneError, "does not exist"),
        (good + [str(tmp_path / "evil.pt")], UnsafeCheckpointError, "Nothing from the file was executed"),
    ]
    for models, error, words in cases:
        with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
            merge_models(str(base_path), models, str(out), MergeParams(method="task_arithmetic"))
        assert_nothing_written(tmp_path, before)
    assert not (tmp_path / "pwned").exists()
    # an existing output is never replaced
    out.write_bytes(b"user file")
    with pytest.raises(LuneError, match="already exists and is not a Lune merge"):
        merge_models(str(base_path), good, str(out), MergeParams(method="task_arithmetic"))
    assert out.read_bytes() == b"user file"


def test_cli_writes_the_same_file_as_the_library(files, tmp_path):
    base_path, paths, _, _ = files
    lib = tmp_path / "lib.safetensors"
    merge_models(str(base_path), [str(p) for p in paths], str(lib), MergeParams(method="ties", density=0.5))
    cli = tmp_path / "cli.safetensors"
    code = cli_main([str(base_path), str(tmp_path / "model*.safetensors"), "-o", str(cli), "--method", "ties",
                     "--density", "0.5"])
    assert code == 0
    assert load_file(cli).keys() == load_file(lib).keys()
    assert all(torch.equal(load_file(cli)[k], load_file(lib)[k]) for k in load_file(lib))
    assert cli_main([str(base_path), str(tmp_path / "nothing*.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------ sources are never altered

@pytest.mark.parametrize("method", ["geometric_median", "ties", "tgmd"])
def test_float64_pt_gives_the_same_file_as_safetensors(files, tmp_path, method):
    """A float64 .pt used to hand out its own tensors: ``.to(float64)`` is a no-op there, the in-place subtraction
    then altered the source, and every later pass read θᵢ − θ₀ instead of θᵢ."""
    base_path, paths, base, models = files
    pt_paths = []
    for i, m in enumerate(models):
        pt_paths.append(tmp_path / f"model{i}.pt")
        torch.save(m, pt_paths[-1])
    params = MergeParams(method=method, density=0.5, max_iterations=3, stop="reference")
    for budget in (HELD, STREAMED):
        a, b = tmp_path / f"st{budget}.safetensors", tmp_path / f"pt{budget}.safetensors"
        merge_models(str(base_path), [str(p) for p in paths], str(a), params, memory_budget_gib=budget)
        merge_models(str(base_path), [str(p) for p in pt_paths], str(b), params, memory_budget_gib=budget)
        st, pt = load_file(a), load_file(b)
        worst = max(float((st[k].double() - pt[k].double()).abs().max()) for k in SHAPES)
        assert worst == 0.0, f"{method}, budget {budget}: .pt and .safetensors differ by {worst}"


@pytest.mark.parametrize("method,options", [("tgmd", {"drop_rate": 0.2, "seed": 3}), ("ties", {"density": 0.4}),
                                            ("dare", {"drop_rate": 0.3}), ("geometric_median", {})])
def test_keys_larger_than_the_budget_are_merged_in_chunks_with_the_same_result(tmp_path, method, options, caplog):
    """A key of 3·2²⁰ + 5 elements under a 40 MB budget is merged in 4 chunks (two passes for the Gram matrix);
    the file equals the one merged with the key whole in memory."""
    g = torch.Generator().manual_seed(4)
    base = {"big": torch.randn(3 * MASK_BLOCK + 5, generator=g, dtype=torch.float32).reshape(-1, 1),
            "small": torch.randn(7)}
    save_file(base, tmp_path / "base.safetensors")
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"m{i}.safetensors"))
        save_file({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}, paths[-1])
    params = MergeParams(method=method, max_iterations=20, **options)
    caplog.set_level(logging.INFO, logger="lune")
    outs = []
    for budget in (HELD, 0.04):
        out = tmp_path / f"b{budget}.safetensors"
        merge_models(str(tmp_path / "base.safetensors"), paths, str(out), params, memory_budget_gib=budget)
        outs.append(load_file(out))
    assert any("2 keys merged, 1 of them in chunks" in r.getMessage() for r in caplog.records)
    for key in base:
        diff = (outs[0][key].double() - outs[1][key].double()).abs()
        spacing = torch.finfo(torch.float32).eps * outs[0][key].double().abs()
        assert bool((diff <= spacing).all()), f"{key}: {float(diff.max())}"


# --------------------------------------------------------------------------------------------- stopping rules

def test_precision_stop_ends_when_the_output_stops_changing(files, tmp_path, caplog):
    """Default rule: the file equals, to one step of the output dtype, the limit of the iterations (a 300-iteration
    stacked float64 Weiszfeld run that never stops early), in fewer iterations. The reference rule stops where
    the objective is flat in float64 (second order at the minimum), before the median has converged."""
    base_path, paths, base, models = files
    half = tmp_path / "f32"
    half.mkdir()
    save_file({k: v.float() for k, v in load_file(base_path).items()}, half / "base.safetensors")
    for i, p in enumerate(paths):
        save_file({k: v.float() for k, v in load_file(p).items()}, half / f"m{i}.safetensors")
    out = tmp_path / "short.safetensors"
    caplog.set_level(logging.INFO, logger="lune")
    merge_models(str(half / "base.safetensors"), [str(half / f"m{i}.safetensors") for i in range(len(paths))],
                 str(out), MergeParams(method="geometric_median", max_iterations=300))
    iterations = next(r.getMessage() for r in caplog.records if "Weiszfeld iterations per key" in r.getMessage())
    print(iterations)
    assert int(iterations.split("max ")[1].split(" ")[0]) < 300
    got = load_file(out)
    for key in SHAPES:
        b = base[key].float().double()
        tau = torch.stack([m[key].float().double() - b for m in models]).reshape(len(models), -1)
        limit = (b + weiszfeld(tau, 300, ftol=-1.0).reshape(b.shape)).float()
        spacing = torch.finfo(torch.float32).eps * limit.abs().clamp(min=torch.finfo(torch.float32).tiny)
        ratio = float(((limit - got[key]).abs() / spacing).max())
        print(key, f"largest difference from the limit: {ratio:.2f} spacings")
        assert ratio <= 1.0, key


# ------------------------------------------------------------------------------- one table entry adds a method

def test_a_method_is_one_table_entry(files, tmp_path, monkeypatch):
    """A method defined only by a new ``METHODS`` record merges (held and streamed), validates its parameters
    and is recorded in the recipe — nothing else is edited."""
    from comfyui_lune.lune.merge import methods

    def largest_magnitude(stack, ctx):  # elementwise over the N × len chunk: the τᵢ of largest |τᵢ|
        return stack.gather(0, stack.abs().argmax(0, keepdim=True))[0]

    monkeypatch.setitem(methods.METHODS, "max_abs", methods.Method(
        methods.drop, None, methods.Aggregate(largest_magnitude), ("drop_rate", "seed", "strength"),
        "θ₀ + λ·argmax|τ̃ᵢ| τ̃ᵢ", "largest-magnitude delta"))
    base_path, paths, base, models = files
    for budget in (HELD, STREAMED):
        out = tmp_path / f"max{budget}.safetensors"
        merge_models(str(base_path), [str(p) for p in paths], str(out),
                     MergeParams(method="max_abs", drop_rate=0.0, strength=0.5), memory_budget_gib=budget)
        got = load_file(out)
        for key in SHAPES:
            tau = torch.stack([m[key] - base[key] for m in models])
            pick = tau.abs().argmax(0, keepdim=True)
            want = base[key] + 0.5 * tau.gather(0, pick)[0]
            assert float((got[key] - want).abs().max()) <= RTOL * float(want.abs().max())
        with safe_open(out, framework="pt") as f:
            recipe = json.loads(f.metadata()[RECIPE_METADATA_KEY])
        assert recipe["method"] == "max_abs" and recipe["params"] == {"drop_rate": 0.0, "seed": 0, "strength": 0.5}
    with pytest.raises(ValueError, match="drop_rate must be in"):
        MergeParams(method="max_abs", drop_rate=1.5).validate()
