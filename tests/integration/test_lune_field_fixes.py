"""Problems users hit in the field, each reproduced in the real in-process ComfyUI:

* auto variant read from folders above the models folder or from a CheckpointSave's prompt/workflow metadata;
* a file whose variant nothing names (the newest lune-flux finetune) was darkened as "lune";
* lune_flow accepted stock Flux/SD3 sampling patches whose shift is in another convention;
* the auto latent factor differed between the images of one batch;
* clip_vae_from read, checked and loaded the donor's UNet (inpainting donors refused) and missed donor swaps;
* Sol at a small denoise asked its 1000-timestep schedule for thousands of steps;
* lune_euler refused the s_churn/s_noise options wrappers forward to every sampler.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from testbed import graphs
from testbed.env import place_model

pytestmark = pytest.mark.comfy

FROM_FILE = "(from model file)"
NEWEST_FLUX_FOLDER = "ffhq_low_t_portraits/checkpoint-00005106"


@pytest.fixture(scope="module")
def node_map(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS


def _sampling(model):
    return model.get_model_object("model_sampling")


def _load(node_map, name, variant="auto", clip_vae_from=FROM_FILE):
    return node_map["LuneModelLoader"]().load(name, variant, 2.0, clip_vae_from)


@pytest.fixture
def extra_models_root(tmp_path):
    """A second models root, as extra_model_paths.yaml adds one: under a folder named ``sol`` (a user called Sol,
    a disk called sol). Removed from ComfyUI's search paths afterwards."""
    import folder_paths

    root = tmp_path / "home" / "sol" / "ComfyUI" / "models"
    added = []
    for folder in ("checkpoints", "diffusion_models"):
        (root / folder).mkdir(parents=True)
        folder_paths.add_model_folder_path(folder, str(root / folder))
        added.append((folder, str(root / folder)))
    try:
        yield root
    finally:
        for folder, path in added:
            folder_paths.folder_names_and_paths[folder][0].remove(path)
            folder_paths.filename_list_cache.pop(folder, None)  # it lists the root pytest deletes with tmp_path


# ----------------------------------------------------------------------------------------- 1. detection sources

def test_models_root_under_a_sol_folder_is_sampled_as_flow(comfy, node_map, extra_models_root, tiny_sd15,
                                                           tiny_models, caplog):
    """ACCEPTANCE: Lune files found under /…/sol/ComfyUI/models/ with variant auto get FLOW sampling."""
    import comfy.model_sampling as ms

    shutil.copyfile(tiny_sd15.single_file, extra_models_root / "checkpoints" / "portrait_single.safetensors")
    shutil.copytree(tiny_sd15.diffusers_dir, extra_models_root / "diffusion_models" / NEWEST_FLUX_FOLDER)
    cases = {"portrait_single.safetensors": "lune",  # its modelspec.title names sd15-flow-lune
             f"{NEWEST_FLUX_FOLDER}/unet/diffusion_pytorch_model.safetensors": "unnamed-flow"}
    for name, variant in cases.items():
        model = _load(node_map, name, clip_vae_from=tiny_models["single_file"])[0]
        sampling = _sampling(model)
        assert isinstance(sampling, ms.CONST) and not isinstance(sampling, ms.EPS), f"{name} must be flow, not Sol"
        assert float(sampling.sigma_max) == 1.0 and sampling.lune_variant == variant
    with caplog.at_level(logging.INFO, logger="lune"):
        result = comfy.run(graphs.txt2img("portrait_single.safetensors", sampler="lune_euler", scheduler="lune_flow",
                                          prefix="sol_root"))
    assert result.ok, result.error_message()
    assert any("→ variant lune (" in r.getMessage() for r in caplog.records)


def test_checkpoint_save_prompt_metadata_does_not_pick_the_variant(comfy, comfy_base, node_map, tiny_models,
                                                                    tmp_path):
    """ComfyUI's CheckpointSave stores the whole prompt JSON: a prompt saying "sol" must not make the file Sol."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_models["single_file"]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "sol de verano, sd15-flow-matching look",
                                                         "clip": ["1", 1]}},
        "3": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                         "filename_prefix": "checkpoints/portrait_merge"}},
    }
    assert comfy.run(g).ok
    saved = sorted((comfy_base / "output" / "checkpoints").glob("portrait_merge_*.safetensors"))[-1]
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
    assert "sol de verano" in metadata["prompt"], "the test needs the prompt inside the file's metadata"
    name = place_model(comfy_base, "checkpoints", saved, "portrait_merge.safetensors")
    model = _load(node_map, name)[0]
    assert type(_sampling(model)).__name__ == "LuneFlowSampling"
    assert _sampling(model).lune_variant == "unnamed-flow"


def test_curated_metadata_key_names_the_variant(node_map, comfy_base, tiny_sd15, tmp_path):
    sd = {}
    with safe_open(str(tiny_sd15.single_file), "pt") as f:
        for k in f.keys():
            sd[k] = f.get_tensor(k)
    path = tmp_path / "named.safetensors"
    save_file(sd, str(path), metadata={"lune.variant": "sol", "prompt": json.dumps({"text": "lune-flux"})})
    name = place_model(comfy_base, "checkpoints", path, "plain_name.safetensors")
    assert type(_sampling(_load(node_map, name)[0])).__name__ == "SolSampling"


# ----------------------------------------------------------------------------------------- 2. unnamed variant

def test_unnamed_lune_flux_finetune_is_not_darkened(comfy, comfy_base, node_map, tiny_sd15, tiny_models, caplog):
    """The newest lune-flux finetune's folders do not say "flux": flow sampling, latents unchanged, a log line."""
    name = place_model(comfy_base, "diffusion_models", tiny_sd15.diffusers_dir, NEWEST_FLUX_FOLDER)
    name = f"{name}/unet/diffusion_pytorch_model.safetensors"
    with caplog.at_level(logging.INFO, logger="lune"):
        model = _load(node_map, name, clip_vae_from=tiny_models["single_file"])[0]
    assert type(_sampling(model)).__name__ == "LuneFlowSampling" and _sampling(model).shift == 2.0
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "variant unnamed-flow" in r.getMessage()]
    assert warning and "Pick the variant" in warning[0].getMessage()
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 20}
    out, factor = node_map["LuneLatentMultiply"]().apply(latent, "variant default", 1.0, model)
    assert factor == 1.0 and torch.equal(out["samples"], latent["samples"])


def test_shift_on_stock_loader_model_keeps_latents_unchanged(comfy, node_map, tiny_models):
    stock = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])[0]
    patched = node_map["LuneShift"]().patch(stock, 2.0)[0]
    assert _sampling(patched).lune_variant == "unnamed-flow"
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 20}
    out, factor = node_map["LuneLatentMultiply"]().apply(latent, "variant default", 1.0, patched)
    assert factor == 1.0 and torch.equal(out["samples"], latent["samples"])
    # a model the loader named keeps its name through the shift node
    lune = _load(node_map, tiny_models["single_file"], "lune")[0]
    assert _sampling(node_map["LuneShift"]().patch(lune, 2.5)[0]).lune_variant == "lune"


# ----------------------------------------------------------------------------------------- 3. foreign flow patches

@pytest.mark.parametrize("stock_node,args,named", [
    ("ModelSamplingFlux", (1.15, 0.5, 64, 64), "ModelSamplingFlux"),
    ("ModelSamplingSD3", (3.0,), "not the pack's"),
])
def test_lune_flow_refuses_stock_flow_patches(comfy, node_map, tiny_models, stock_node, args, named):
    nodes = comfy.nodes
    model, clip = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])[:2]
    patched = node_map[stock_node]().patch(model, *args)[0]
    pos = nodes.CLIPTextEncode().encode(clip, "x")[0]
    with pytest.raises(ValueError, match="Lune Flow Shift") as info:
        nodes.common_ksampler(patched, 0, 2, 1.0, "euler", "lune_flow", pos, pos,
                              {"samples": torch.zeros(1, 4, 8, 8)})
    assert named in str(info.value) and "Load Lune Model" in str(info.value)
    with pytest.raises(ValueError, match="Lune Flow Shift"):
        node_map["LuneSamplerAdapter"]().build(patched, 4, 1.0)
    # the fix the message names works: Lune Flow Shift replaces the stock patch
    fixed = node_map["LuneShift"]().patch(patched, 2.0)[0]
    assert node_map["LuneSamplerAdapter"]().build(fixed, 4, 1.0)[1].shape == (5,)


# ----------------------------------------------------------------------------------------- 4. one factor per batch

def test_auto_factor_is_one_per_batch(node_map):
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(1, 4, 8, 8, generator=g) * 20, torch.randn(1, 4, 8, 8, generator=g) * 9])
    out, factor = node_map["LuneLatentMultiply"]().apply({"samples": x}, "auto", 1.0, None)
    ratios = (out["samples"] / x).flatten(1)
    assert torch.allclose(ratios, torch.full_like(ratios, factor), rtol=1e-6, atol=0), "same factor for every image"
    assert 0.25 <= factor < 1.0


# ----------------------------------------------------------------------------------------- 5. clip_vae_from donor

def _inpainting_donor(tiny_sd15, path):
    """The tiny SD1.5 checkpoint with an inpainting UNet (9 input channels: latent + mask + masked image)."""
    sd = {}
    with safe_open(str(tiny_sd15.single_file), "pt") as f:
        for k in f.keys():
            sd[k] = f.get_tensor(k)
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    sd[conv_in] = torch.cat([sd[conv_in], torch.zeros_like(sd[conv_in][:, :1]).repeat(1, 5, 1, 1)], dim=1)
    assert sd[conv_in].shape[1] == 9
    if str(path).endswith(".ckpt"):
        torch.save({"state_dict": sd, "global_step": 1}, path)
    else:
        save_file(sd, str(path))
    return path


@pytest.mark.parametrize("filename", ["sd15_inpainting_donor.safetensors", "sd15_inpainting_donor.ckpt"])
def test_inpainting_donor_gives_clip_and_vae_without_its_unet(comfy, comfy_base, node_map, tiny_models, tiny_sd15,
                                                              tmp_path, monkeypatch, filename):
    import safetensors

    donor = place_model(comfy_base, "checkpoints", _inpainting_donor(tiny_sd15, tmp_path / filename), filename)
    read_keys = []
    real_safe_open = safetensors.safe_open

    class RecordingSafeOpen:
        def __init__(self, *args, **kwargs):
            self.inner = real_safe_open(*args, **kwargs)

        def __enter__(self):
            handle = self.inner.__enter__()
            recorder = self

            class Handle:
                def __getattr__(self, name):
                    return getattr(handle, name)

                def get_tensor(self, key):
                    read_keys.append(key)
                    return handle.get_tensor(key)
            recorder.handle = Handle()
            return recorder.handle

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", RecordingSafeOpen)
    model, clip, vae = _load(node_map, tiny_models["bare_diffusers"], "lune-flux", donor)
    monkeypatch.undo()
    assert clip is not None and vae is not None
    if filename.endswith(".safetensors"):
        donor_reads = [k for k in read_keys if k.startswith(("cond_stage_model.", "first_stage_model."))]
        assert donor_reads and not any(k.startswith("model.diffusion_model.") for k in read_keys), \
            "the donor's UNet must not be read"
    # the donor's CLIP is the fixture's CLIP: same conditioning as the checkpoint's own
    own_clip = _load(node_map, tiny_models["single_file"], "lune-flux")[1]
    enc = comfy.nodes.CLIPTextEncode()
    assert torch.equal(enc.encode(clip, "a lighthouse")[0][0][0], enc.encode(own_clip, "a lighthouse")[0][0][0])
    result = comfy.run(graphs.txt2img(tiny_models["bare_diffusers"], variant="lune-flux", clip_vae_from=donor,
                                      prefix="inpaint_donor"))
    assert result.ok, result.error_message()


def test_donor_without_clip_is_refused_with_the_fix(node_map, tiny_models, comfy_base, tiny_sd15):
    donor = place_model(comfy_base, "checkpoints", tiny_sd15.bare_unet, "unet_only_donor.safetensors")
    with pytest.raises(ValueError, match="no CLIP and VAE inside.*full SD1.5 checkpoint"):
        _load(node_map, tiny_models["bare_diffusers"], "lune-flux", donor)


def test_replaced_donor_file_is_reloaded(comfy, comfy_base, tiny_models, tiny_sd15, tmp_path):
    """Same clip_vae_from name, new bytes on disk → the next prompt reads the donor again (its stamp is in
    IS_CHANGED)."""
    donor_file = tmp_path / "swap_donor.safetensors"
    shutil.copyfile(tiny_sd15.single_file, donor_file)
    donor = place_model(comfy_base, "checkpoints", donor_file, "swap_donor.safetensors")
    g = graphs.txt2img(tiny_models["bare_diffusers"], variant="lune-flux", clip_vae_from=donor, prefix="swap_donor")
    assert comfy.run(g).ok
    donor_file.write_bytes(b"")  # replaced by a broken download
    result = comfy.run(g)
    assert not result.ok and "empty" in result.error_message()
    os.remove(donor_file)


# ----------------------------------------------------------------------------------------- 6. Sol small denoise

class _TimestepSpy:
    def __init__(self, model):
        self.calls: list[float] = []
        self.handle = model.model.diffusion_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = kwargs.get("timesteps", args[1] if len(args) > 1 else None)
        self.calls.append(float(t.flatten()[0]))


def test_sol_small_denoise_samples_the_last_timesteps(comfy, node_map, tiny_models):
    nodes = comfy.nodes
    sol, clip = _load(node_map, tiny_models["single_file"], "sol")[:2]
    pos = nodes.CLIPTextEncode().encode(clip, "x")[0]
    spy = _TimestepSpy(sol)
    try:
        out = nodes.common_ksampler(sol, 0, 20, 7.5, "lune_euler", "lune_flow", pos, pos,
                                    {"samples": torch.randn(1, 4, 8, 8)}, denoise=0.01)[0]["samples"]
    finally:
        spy.handle.remove()
    assert torch.isfinite(out).all()
    assert len(spy.calls) == 20 and spy.calls[0] == 19.0 and spy.calls[-1] == 0.0
    sigmas = node_map["LuneSamplerAdapter"]().build(sol, 20, 0.01)[1]
    assert sigmas.shape == (21,) and sigmas[-1] == 0


# ----------------------------------------------------------------------------------------- 7. lune_euler options

@torch.no_grad()
def test_lune_euler_takes_the_options_wrappers_forward(comfy, node_map, tiny_models):
    from comfy.sample import sample_custom
    from comfy.samplers import ksampler

    model, clip = _load(node_map, tiny_models["single_file"], "lune-flux")[:2]
    pos = node_map["CLIPTextEncode"]().encode(clip, "x")[0]
    sigmas = node_map["LuneSamplerAdapter"]().build(model, 4, 1.0)[1]
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    runs = []
    for options in ({}, {"s_churn": 0.5, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.003}):
        runs.append(sample_custom(model, noise, 7.5, ksampler("lune_euler", options), sigmas, pos, pos, latent,
                                  seed=3, disable_pbar=True))
    assert torch.equal(runs[0], runs[1])
