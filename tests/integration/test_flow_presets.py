"""The other SD1.5 flow models (sd-flow-alpha, InstaFlow / 2-Rectified Flow) through the pack's loader, in a real
ComfyUI: their model_sampling conventions, sampling parity with plain-torch loops written from each convention,
the patch surviving LuneShift / RES4LYF's set_parameters, and auto-detection from a models-folder name or a
diffusers pipeline folder."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from testbed.env import place_model

pytestmark = pytest.mark.comfy

SEED = 1234
RTOL = 1e-4  # max |ComfyUI − reference| allowed, relative to max |reference| (both fp32 on the CPU)
FROM_FILE = "(from model file)"
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def loader(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS["LuneModelLoader"]()


@pytest.fixture(scope="module")
def models(loader, tiny_models):
    """variant → (MODEL, CLIP, VAE) of the single-file fixture, shift widget 0 = the variant's own shift."""
    return {v: loader.load(tiny_models["single_file"], v, 0.0, FROM_FILE) for v in ("sd-flow-alpha", "instaflow")}


@pytest.fixture(scope="module")
def conds(comfy, models):
    enc = comfy.nodes.CLIPTextEncode()
    clip = models["instaflow"][1]
    return enc.encode(clip, "a hyper-realistic photo of a cute cat")[0], enc.encode(clip, "")[0]


def _sampling(model):
    return model.get_model_object("model_sampling")


# ------------------------------------------------------------------------------------------- model_sampling

@pytest.mark.parametrize("variant,multiplier,sign", [("sd-flow-alpha", 999.0, 1.0), ("instaflow", 1000.0, -1.0)])
def test_model_sampling_follows_the_convention(models, variant, multiplier, sign):
    ms = _sampling(models[variant][0])
    assert type(ms).__name__ == "LuneFlowSampling" and ms.lune_variant == variant
    assert ms.shift == 1.0 and float(ms.sigma_max) == 1.0
    sigma = torch.tensor([1.0, 0.73, 0.25, 0.01])
    assert torch.allclose(ms.timestep(sigma), multiplier * sigma)
    assert torch.allclose(ms.sigma(ms.timestep(sigma)), sigma)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    s = sigma.view(-1, 1, 1, 1)
    x = s * eps + (1 - s) * x0
    exact_output = (eps - x0) if sign > 0 else (x0 - eps)  # Lune/sd-flow-alpha predict ε − x0, InstaFlow x0 − ε
    denoised = ms.calculate_denoised(sigma, exact_output, x)
    err = (denoised - x0).abs().max().item()
    print(f"{variant}: calculate_denoised of the exact output, max |x̂0 − x0| = {err:.2e}")
    assert err <= RTOL * x0.abs().max().item()


@pytest.mark.parametrize("variant", ["sd-flow-alpha", "instaflow"])
def test_res4lyf_deepcopy_and_set_parameters_keep_multiplier_and_sign(models, variant):
    ms = _sampling(models[variant][0])
    clone = copy.deepcopy(ms)
    clone.set_parameters(shift=3.0)
    assert clone.shift == 3.0 and ms.shift == 1.0
    assert (clone.multiplier, clone.output_sign) == (ms.multiplier, ms.output_sign)
    assert float(clone.timestep(torch.tensor(0.5))) == pytest.approx(0.5 * ms.multiplier)


@pytest.mark.parametrize("variant", ["sd-flow-alpha", "instaflow"])
def test_lune_shift_node_and_adapter_treat_them_like_lune(comfy, models, variant):
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    shifted = nodes["LuneShift"]().patch(models[variant][0], 2.5)[0]
    ms, before = _sampling(shifted), _sampling(models[variant][0])
    assert ms.lune_variant == variant and ms.shift == 2.5
    assert (ms.multiplier, ms.output_sign) == (before.multiplier, before.output_sign)
    _, sigmas = nodes["LuneSamplerAdapter"]().build(models[variant][0], 4, 1.0)
    assert torch.allclose(sigmas, torch.linspace(1, 0, 5), atol=1e-6)  # shift 1: the authors' uniform grid


def test_explicit_shift_overrides_the_variant_default(loader, tiny_models):
    model = loader.load(tiny_models["single_file"], "instaflow", 2.0, FROM_FILE)[0]
    assert _sampling(model).shift == 2.0
    lune = loader.load(tiny_models["single_file"], "lune-flux", 0.0, FROM_FILE)[0]
    assert _sampling(lune).shift == 2.0 and _sampling(lune).output_sign == 1.0


# ------------------------------------------------------------------------------------------- sampling parity

def _mix(unet, x, t, cond, uncond, cfg):
    out = unet(torch.cat([x, x]), torch.full((x.shape[0] * 2,), t), context=torch.cat([cond, uncond]))
    out_c, out_u = out.chunk(2)
    return out_u + cfg * (out_c - out_u)


def _plain_sd_flow_alpha(unet, cond, uncond, shape, steps, cfg, seed):
    """sd-flow-alpha, written from its trainer's convention: x_σ = σ·ε + (1−σ)·x0, target v = ε − x0, UNet
    timestep 999·σ, no shift. Euler from σ = 1 to 0 on σ_i = 1 − i/N: x ← x + (σ_{i+1} − σ_i)·v."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    grid = [1 - i / steps for i in range(steps + 1)]
    for i in range(steps):
        v = _mix(unet, x, 999.0 * grid[i], cond, uncond, cfg)
        x = x + (grid[i + 1] - grid[i]) * v
    return x / 0.18215  # ComfyUI hands out latents divided by SD1.5's scale factor


def _plain_instaflow(unet, cond, uncond, shape, steps, cfg, seed):
    """InstaFlow's own loop: t_i = (1 − i/N)·1000, dt = 1/N, latents ← latents + dt·v_pred (v_pred = x0 − ε),
    i.e. x ← x − (σ_{i+1} − σ_i)·out: the direction of Lune's step flipped."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    dt = 1.0 / steps
    for i in range(steps):
        v_pred = _mix(unet, x, (1.0 - i / steps) * 1000.0, cond, uncond, cfg)
        x = x + dt * v_pred
    return x / 0.18215


PARITY_CASES = [  # variant, steps, cfg, sampler, scheduler
    ("sd-flow-alpha", 8, 7.5, "lune_euler", "lune_flow"),
    ("sd-flow-alpha", 8, 7.5, "euler", "simple"),
    ("instaflow", 8, 1.5, "lune_euler", "lune_flow"),  # 2-Rectified Flow: few steps, CFG 1.0–2.0
    ("instaflow", 4, 1.5, "euler", "simple"),
    ("instaflow", 1, 1.0, "lune_euler", "lune_flow"),  # InstaFlow-0.9B: one step, CFG 1 (no uncond pass)
]


@torch.no_grad()
@pytest.mark.parametrize("variant,steps,cfg,sampler,scheduler", PARITY_CASES)
def test_ksampler_matches_plain_torch_loop(comfy, models, conds, variant, steps, cfg, sampler, scheduler):
    pos, neg = conds
    model = models[variant][0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = comfy.nodes.common_ksampler(model, SEED, steps, cfg, sampler, scheduler, pos, neg, latent)[0]["samples"]
    plain = _plain_sd_flow_alpha if variant == "sd-flow-alpha" else _plain_instaflow
    ref = plain(model.model.diffusion_model, pos[0][0], neg[0][0], (1, 4, 8, 8), steps, cfg, SEED)
    err, scale = (out - ref).abs().max().item(), ref.abs().max().item()
    print(f"{variant} {sampler}+{scheduler} {steps} steps cfg {cfg}: max |ComfyUI − plain torch| = {err:.2e} "
          f"({err / scale:.1e} of latent max {scale:.2f})")
    assert err <= RTOL * scale


@torch.no_grad()
def test_sign_matters_instaflow_differs_from_lune_convention(comfy, loader, tiny_models, models, conds):
    """Guards the parity test's power: the same weights sampled with Lune's sign give a different latent."""
    pos, neg = conds
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    lune = loader.load(tiny_models["single_file"], "lune-flux", 1.0, FROM_FILE)[0]
    a = comfy.nodes.common_ksampler(models["instaflow"][0], SEED, 4, 1.5, "euler", "simple", pos, neg, latent)
    b = comfy.nodes.common_ksampler(lune, SEED, 4, 1.5, "euler", "simple", pos, neg, latent)
    diff = (a[0]["samples"] - b[0]["samples"]).abs().max().item()
    assert diff > 100 * RTOL * b[0]["samples"].abs().max().item()


# ------------------------------------------------------------------------------------------- auto

@pytest.mark.parametrize("folder,expected", [
    ("opendiffusionai_sd-flow-alpha", "sd-flow-alpha"),
    ("sd15-flow-alpha-finetune", "sd-flow-alpha"),
    ("2_rectified_flow_from_sd_1_5", "instaflow"),
    ("instaflow_0_9B_from_sd_1_5", "instaflow"),
])
def test_auto_on_a_folder_named_like_the_published_repo(loader, comfy_base, tiny_sd15, folder, expected, caplog):
    name = place_model(comfy_base, "diffusion_models", tiny_sd15.diffusers_dir, folder)
    with caplog.at_level("INFO", logger="lune"):
        model = loader.load(f"{name}/{UNET_FILE}", "auto", 0.0, FROM_FILE)[0]
    ms = _sampling(model)
    assert ms.lune_variant == expected and ms.shift == 1.0
    assert any(f"variant {expected}" in r.getMessage() for r in caplog.records), "the choice must be logged"


def test_auto_reads_a_pipeline_folders_model_index(loader, comfy_base, tiny_sd15, tmp_path):
    root = tmp_path / "pipe"
    root.mkdir()
    (root / "unet").symlink_to((tiny_sd15.diffusers_dir / "unet").resolve(), target_is_directory=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0}))
    name = place_model(comfy_base, "diffusion_models", root, "my_download_123")
    model = loader.load(f"{name}/{UNET_FILE}", "auto", 0.0, FROM_FILE)[0]
    assert _sampling(model).lune_variant == "sd-flow-alpha" and _sampling(model).multiplier == 999.0


def test_unnamed_file_is_not_guessed_as_one_of_them(loader, comfy_base, tiny_sd15):
    name = place_model(comfy_base, "checkpoints", tiny_sd15.single_file, "mystery_model.safetensors")
    model = loader.load(name, "auto", 0.0, FROM_FILE)[0]
    assert _sampling(model).lune_variant not in ("sd-flow-alpha", "instaflow")


@torch.no_grad()
@pytest.mark.parametrize("sampler,scheduler", [("dpmpp_2m", "simple"), ("heun", "beta")])
def test_instaflow_equals_lune_convention_on_a_unet_with_negated_output(comfy, loader, comfy_base, tiny_sd15, models,
                                                                        conds, tmp_path, sampler, scheduler):
    """Any sampler: InstaFlow's sign on weights W ≡ Lune's convention (shift 1) on W with the UNet's last conv
    negated (its output is exactly −out). Independent of how a sampler uses x̂0."""
    import safetensors.torch

    sd = safetensors.torch.load_file(str(tiny_sd15.single_file))
    last = [k for k in sd if k.startswith("model.diffusion_model.out.2.")]
    assert len(last) == 2
    sd.update({k: -sd[k] for k in last})
    safetensors.torch.save_file(sd, str(tmp_path / "negated_output.safetensors"))
    name = place_model(comfy_base, "checkpoints", tmp_path / "negated_output.safetensors")
    negated = loader.load(name, "lune-flux", 1.0, FROM_FILE)[0]
    pos, neg = conds
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    a = comfy.nodes.common_ksampler(models["instaflow"][0], SEED, 4, 1.5, sampler, scheduler, pos, neg, latent)
    b = comfy.nodes.common_ksampler(negated, SEED, 4, 1.5, sampler, scheduler, pos, neg, latent)
    a, b = a[0]["samples"], b[0]["samples"]
    err, scale = (a - b).abs().max().item(), b.abs().max().item()
    print(f"instaflow vs negated-output lune-flux, {sampler}+{scheduler}: max diff {err:.2e} (latent max {scale:.2f})")
    assert err <= RTOL * scale
