"""Lune Discrete Schedule in the real ComfyUI on the tiny SD1.5 fixture: σ table, σ → t, parity of KSampler with
an independent plain-torch v-prediction Euler loop, patch hygiene, and refusal of bad input."""
from __future__ import annotations

import logging
import math

import pytest
import torch

pytestmark = pytest.mark.comfy

T = 1000
STEPS, CFG, SEED = 8, 7.5, 4321
# ComfyUI vs the reference loop, relative to max|latent|. Both run in float32; under ZTSNR x starts at
# σ_max·ε ≈ 2.3e4·ε where one float32 ulp is 2e-3, which bounds the agreement (measured ≈ 3e-5).
RTOL = 1e-4
SD15_SCALE = 0.18215
SQCU = dict(prediction="v_prediction", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.024,
            zero_terminal_snr=True)


def ref_table(beta_end: float, ztsnr: bool) -> list[float]:
    """scaled_linear σ table in float64 Python floats; ZTSNR per Lin et al. 2023 Algorithm 1 (top left as inf)."""
    a, b = math.sqrt(0.00085), math.sqrt(beta_end)
    alpha_bar, prod = [], 1.0
    for i in range(T):
        prod *= 1 - (a + (b - a) * i / (T - 1)) ** 2
        alpha_bar.append(prod)
    if ztsnr:
        s = [math.sqrt(x) for x in alpha_bar]
        alpha_bar = [((x - s[-1]) * s[0] / (s[0] - s[-1])) ** 2 for x in s]
    return [math.sqrt((1 - x) / x) if x > 0 else math.inf for x in alpha_bar]


@pytest.fixture(scope="module")
def node_map(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def stock(comfy, tiny_models):
    """(MODEL, CLIP, VAE) of the tiny SD1.5 single file through ComfyUI's own Load Checkpoint."""
    return comfy.nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])


@pytest.fixture(scope="module")
def conds(comfy, stock):
    enc = comfy.nodes.CLIPTextEncode()
    return enc.encode(stock[1], "a lighthouse at dusk")[0], enc.encode(stock[1], "")[0]


def patch(node_map, model, label_shift=0.0, **settings):
    values = dict(SQCU, **settings)
    return node_map["LuneDiscreteSchedule"]().patch(model, values["prediction"], values["beta_schedule"],
                                                    values["beta_start"], values["beta_end"],
                                                    values["zero_terminal_snr"], label_shift)[0]


# ------------------------------------------------------------------------------------------------ σ table, σ → t

@pytest.mark.parametrize("beta_end", [0.012, 0.020, 0.024])
def test_patched_table_equals_reference_and_top_is_strictly_increasing(node_map, stock, beta_end):
    import comfy.model_sampling as ms

    sampling = patch(node_map, stock[0], beta_end=beta_end).get_model_object("model_sampling")
    assert isinstance(sampling, ms.ModelSamplingDiscrete) and isinstance(sampling, ms.V_PREDICTION)
    table = sampling.sigmas.double()
    ref = ref_table(beta_end, True)
    err = max(abs(g - r) / r for g, r in zip(table[:T - 1].tolist(), ref[:T - 1]))
    print(f"beta_end {beta_end}: max rel err of the patched table, t ≤ T−2: {err:.1e}; top σ {table[-1].item():.1f}")
    assert err <= 1e-6  # float32 storage of float64 values
    assert torch.isfinite(table).all() and (table[1:] > table[:-1]).all()
    assert float(sampling.sigma_max) == table.max().item() and float(sampling.sigma_min) == table.min().item()
    t = sampling.timestep(torch.tensor([float(sampling.sigma_max), table[T - 2].item(), table[500].item()]))
    assert t.tolist() == [T - 1, T - 2, 500], "σ → t must hit the right timestep, the top included"


def test_comfys_own_ztsnr_table_is_not_monotonic_at_beta_end_0_024():
    """Why the node exists: the same rescale with ComfyUI's fixed terminal ᾱ puts σ_max below σ_{T−2}."""
    import comfy.model_sampling as ms

    plain = torch.tensor(ref_table(0.024, False), dtype=torch.float64)
    comfy_table = ms.rescale_zero_terminal_snr_sigmas(plain.clone())
    assert comfy_table[-1] < comfy_table[-2], "ComfyUI fixed its terminal clamp: revisit finite_terminal_sigma"


def test_unet_gets_integer_timesteps_from_the_top_and_label_shift(comfy, node_map, stock, conds):
    model = patch(node_map, stock[0])
    seen = []
    hook = model.model.diffusion_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("timesteps", args[1] if len(args) > 1 else None)[0].item()),
        with_kwargs=True)
    try:
        _ksample(comfy, model, conds, steps=4)
        plain_labels = list(seen)
        seen.clear()
        _ksample(comfy, patch(node_map, stock[0], label_shift=3.0), conds, steps=4)
        shifted = list(seen)
    finally:
        hook.remove()
    assert plain_labels == [999.0, 749.0, 499.0, 249.0]
    expected = [math.floor(999 * (3 * (t / 999)) / (1 + 2 * (t / 999))) for t in plain_labels]
    assert shifted == expected and shifted != plain_labels


# ------------------------------------------------------------------------------------------------------ parity

def _ksample(comfy, model, conds, steps=STEPS, sampler="euler", scheduler="simple"):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfy.nodes.common_ksampler(model, SEED, steps, CFG, sampler, scheduler, conds[0], conds[1], latent)[0][
        "samples"]


def plain_v_euler(unet, cond, uncond, table, steps, cfg, seed, shape=(1, 4, 8, 8)):
    """Independent v-prediction Euler (k-diffusion form) on the trailing grid of ``table`` (σ_T may be inf-free).

    x_T = √(1 + σ_max²)·ε;  c_in = 1/√(σ²+1);  x̂0 = x/(σ²+1) − v·σ/√(σ²+1);  x ← x + (σ' − σ)·(x − x̂0)/σ.
    """
    ts = [round(T - i * T / steps) - 1 for i in range(steps)]
    sig = [table[t] for t in ts] + [0.0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * math.sqrt(1 + sig[0] ** 2)
    for i, t in enumerate(ts):
        s = sig[i]
        out = unet(torch.cat([x, x]) / math.sqrt(s * s + 1), torch.full((2 * shape[0],), float(t)),
                   context=torch.cat([cond, uncond]))
        v_c, v_u = out.chunk(2)
        v = v_u + cfg * (v_c - v_u)
        x0 = x / (s * s + 1) - v * s / math.sqrt(s * s + 1)
        x = x + (sig[i + 1] - s) * (x - x0) / s
    return x / SD15_SCALE


@pytest.mark.parametrize("beta_end, ztsnr", [(0.024, True), (0.012, True), (0.020, False)])
@torch.no_grad()
def test_ksampler_equals_plain_torch_v_prediction_euler(comfy, node_map, stock, conds, beta_end, ztsnr):
    model = patch(node_map, stock[0], beta_end=beta_end, zero_terminal_snr=ztsnr)
    out = _ksample(comfy, model, conds)
    table = ref_table(beta_end, ztsnr)
    if ztsnr:  # the documented finite top: one more log-σ step
        table[-1] = table[-2] ** 2 / table[-3]
    ref = plain_v_euler(stock[0].model.diffusion_model, conds[0][0][0], conds[1][0][0], table, STEPS, CFG, SEED)
    err, scale = (out - ref).abs().max().item(), ref.abs().max().item()
    print(f"v-pred parity beta_end {beta_end} ztsnr={ztsnr}: max |ComfyUI − plain| = {err:.2e}, "
          f"max |latent| = {scale:.2f}, relative {err / scale:.1e}")
    assert torch.isfinite(out).all() and err <= RTOL * scale


# --------------------------------------------------------------------------------------------- patch hygiene

def test_input_model_untouched_and_patch_replaces_earlier_ones(comfy, node_map, stock, tiny_models):
    import comfy.model_sampling as ms

    base = stock[0]
    before = base.get_model_object("model_sampling")
    a = patch(node_map, base, beta_end=0.012, zero_terminal_snr=False, prediction="eps")
    b = patch(node_map, a)
    assert base.get_model_object("model_sampling") is before and isinstance(before, ms.EPS)
    assert "model_sampling" not in base.object_patches
    assert isinstance(a.get_model_object("model_sampling"), ms.EPS)
    assert not isinstance(a.get_model_object("model_sampling"), ms.V_PREDICTION)
    assert float(b.get_model_object("model_sampling").sigma_max) > 20000
    assert list(b.object_patches).count("model_sampling") == 1
    stock_vpred = node_map["ModelSamplingDiscrete"]().patch(base, "v_prediction", True)[0]
    sol = node_map["LuneModelLoader"]().load(tiny_models["single_file"], "sol", 2.0, "(from model file)")[0]
    flow = node_map["LuneShift"]().patch(base, 2.0)[0]
    for earlier in (stock_vpred, sol, flow):
        replaced = patch(node_map, earlier).get_model_object("model_sampling")
        assert type(replaced).__name__ == "LuneDiscreteV" and replaced.zsnr and replaced.linear_end == 0.024


def bare_model(stock, model_type: str):
    """A MODEL with the fixture's UNet config but another ComfyUI model_type (what a loader would build for a file
    of that kind): ComfyUI's own BaseModel + ModelPatcher, random weights."""
    import comfy.model_base
    import comfy.model_patcher

    base = comfy.model_base.BaseModel(stock[0].model.model_config, getattr(comfy.model_base.ModelType, model_type))
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def test_report_names_what_the_model_was_loaded_as(comfy, node_map, stock, caplog):
    vpred = bare_model(stock, "V_PREDICTION")
    vpred.model.model_sampling.zsnr = True  # what SDXL's loader sets for a file with a "ztsnr" key
    with caplog.at_level(logging.INFO, logger="lune"):
        patch(node_map, vpred, zero_terminal_snr=False)
        patch(node_map, node_map["LuneShift"]().patch(stock[0], 2.0)[0])
    messages = [r.getMessage() for r in caplog.records]
    assert any("was loaded as V_PREDICTION with zsnr" in m for m in messages), messages
    assert any("ztsnr key" in m and "zero_terminal_snr is off" in m for m in messages), messages
    assert any("replaces the earlier sampling patch LuneFlowSampling" in m for m in messages), messages
    assert any("σ 0.02917 … 22640.3" in m for m in messages), messages


# ------------------------------------------------------------------------------------------------- bad input

def graph(model_name, prefix, **settings):
    values = dict(SQCU, **settings)
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model_name}},
        "2": {"class_type": "LuneDiscreteSchedule", "inputs": {"model": ["1", 0], **values}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 0, "steps": 4, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    }


@pytest.mark.parametrize("settings, needles", [
    ({"beta_end": 0.0008}, ("must be larger than beta_start", "0.00085")),
    ({"beta_start": 0.024, "beta_end": 0.012}, ("did you swap",)),
    ({"beta_end": 0.06}, ("0.06", "0.05")),   # refused by the widget range at validation
    ({"beta_start": 0.0}, ("beta_start",)),   # idem
])
def test_bad_betas_fail_with_the_fix_and_next_prompt_runs(comfy, tiny_models, settings, needles):
    bad = comfy.run(graph(tiny_models["single_file"], "discrete_bad", **settings))
    assert not bad.ok
    for needle in needles:
        assert needle in bad.error_message(), bad.error_message()
    good = comfy.run(graph(tiny_models["single_file"], "discrete_good"))
    assert good.ok, good.error_message()
    assert comfy.output_files(good)[0].is_file()


@pytest.mark.parametrize("name, value, needles", [
    ("beta_end", 0.06, ("above 0.05", "model card")),
    ("beta_start", -0.001, ("positive", "0.00085")),
    ("beta_end", float("nan"), ("positive", "0.012")),
])
def test_values_arriving_through_a_link_skip_widget_limits_and_are_refused_by_the_node(comfy, tiny_models, name,
                                                                                     value, needles):
    g = graph(tiny_models["single_file"], "discrete_link")
    g["p"] = {"class_type": "PrimitiveFloat", "inputs": {"value": value}}
    g["2"]["inputs"][name] = ["p", 0]
    bad = comfy.run(g)
    assert not bad.ok and bad.error and bad.error.get("node_type") == "LuneDiscreteSchedule", bad.error_message()
    for needle in needles:
        assert needle in bad.error_message(), bad.error_message()
    assert comfy.run(graph(tiny_models["single_file"], "discrete_good")).ok


@pytest.mark.parametrize("model_type", ["FLOW", "FLUX", "EDM", "V_PREDICTION_EDM"])
def test_non_discrete_models_are_refused(comfy, node_map, stock, model_type):
    """A Flux/SD3-style MODEL (model_type FLOW/FLUX) or an EDM one is not a discrete-schedule network."""
    foreign = bare_model(stock, model_type)
    with pytest.raises(ValueError, match=f"loaded as {model_type}.*ModelSamplingSD3"):
        patch(node_map, foreign)
    assert "model_sampling" not in foreign.object_patches


def test_bad_prediction_and_label_shift_are_refused(node_map, stock):
    with pytest.raises(ValueError, match="prediction must be one of"):
        patch(node_map, stock[0], prediction="x0")
    with pytest.raises(ValueError, match="timestep_label_shift"):
        patch(node_map, stock[0], label_shift=-1.0)


def test_sd2_v_prediction_model_is_patched(node_map, stock):
    """An SD2-768-style MODEL (ComfyUI's SD20 config, context 1024, loaded as V_PREDICTION; tiny UNet, weights
    left uninitialised by ComfyUI's ops, so only the sampling object is checked)."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.model_sampling as ms
    import comfy.supported_models

    unet_config = dict(stock[0].model.model_config.unet_config, context_dim=1024, use_linear_in_transformer=True)
    base = comfy.model_base.BaseModel(comfy.supported_models.SD20(unet_config), comfy.model_base.ModelType.V_PREDICTION)
    sd2 = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    sampling = patch(node_map, sd2, beta_end=0.012, zero_terminal_snr=False).get_model_object("model_sampling")
    assert isinstance(sampling, ms.V_PREDICTION) and float(sampling.sigma_max) == pytest.approx(14.6146, rel=1e-5)
    assert sampling.timestep(sampling.sigma_max.reshape(1)).item() == T - 1
    assert type(sd2.model.model_config).__name__ == "SD20" and "model_sampling" not in sd2.object_patches
