"""The other SD1.5 flow models as loader variants: their records, auto-detection by name and by pipeline folder."""
from __future__ import annotations

import json

import pytest

from comfyui_lune.lune import variants
from comfyui_lune.lune.pipeline_folder import pipeline_root, variant_from_pipeline_folder

NEW_VARIANTS = ("sd-flow-alpha", "instaflow")
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


def test_conventions_of_the_new_variants():
    alpha, insta = variants.get_variant("sd-flow-alpha"), variants.get_variant("instaflow")
    assert (alpha.prediction, alpha.timestep_multiplier, alpha.output_sign, alpha.default_shift) == (
        variants.FLOW, 999.0, 1.0, 1.0)
    assert (insta.prediction, insta.timestep_multiplier, insta.output_sign, insta.default_shift) == (
        variants.FLOW, 1000.0, -1.0, 1.0)
    assert alpha.latent_multiplier == insta.latent_multiplier == 1.0
    for name in ("lune", "lune-flux"):  # Lune's convention is unchanged
        v = variants.get_variant(name)
        assert (v.timestep_multiplier, v.output_sign, v.default_shift) == (1000.0, 1.0, 2.0)


@pytest.mark.parametrize("name,requested,expected", [
    ("lune", variants.SHIFT_FROM_VARIANT, 2.0), ("sd-flow-alpha", variants.SHIFT_FROM_VARIANT, 1.0),
    ("instaflow", variants.SHIFT_FROM_VARIANT, 1.0), ("instaflow", 2.5, 2.5), ("lune", 3.0, 3.0),
])
def test_shift_widget_zero_means_the_variants_trained_shift(name, requested, expected):
    assert variants.effective_shift(variants.get_variant(name), requested) == expected


@pytest.mark.parametrize("relative_path,expected", [
    ("opendiffusionai_sd-flow-alpha/" + UNET_FILE, "sd-flow-alpha"),
    ("sd-flow-alpha/" + UNET_FILE, "sd-flow-alpha"),
    ("spacepxl_sd15-flow-alpha-finetune/" + UNET_FILE, "sd-flow-alpha"),
    ("sd15-flow-alpha-finetune.safetensors", "sd-flow-alpha"),
    ("XCLiu_2_rectified_flow_from_sd_1_5/" + UNET_FILE, "instaflow"),
    ("2_rectified_flow_from_sd_1_5/" + UNET_FILE, "instaflow"),
    ("XCLiu_instaflow_0_9B_from_sd_1_5/" + UNET_FILE, "instaflow"),
    ("InstaFlow-0.9B.safetensors", "instaflow"),
])
def test_auto_names_each_published_repo_folder(relative_path, expected):
    chosen, reason = variants.detect_variant(relative_path)
    assert chosen.name == expected, reason


@pytest.mark.parametrize("relative_path", [
    "mystery_model.safetensors", "my_finetune/" + UNET_FILE, "flow_alpha_test.safetensors", "sd15_rf.ckpt",
    "realisticVision_v51.safetensors",
])
def test_unnamed_files_are_never_guessed_as_the_new_variants(relative_path):
    chosen, reason = variants.detect_variant(relative_path)
    assert chosen.name not in NEW_VARIANTS, reason


def _pipeline(tmp_path, name="pipeline", model_index=None, scheduler=None, unet_config=None):
    """A diffusers pipeline folder with the given JSON files (weights file empty: only its location matters)."""
    root = tmp_path / name
    (root / "unet").mkdir(parents=True)
    (root / UNET_FILE).write_bytes(b"")
    for rel, data in (("model_index.json", model_index), ("scheduler/scheduler_config.json", scheduler),
                      ("unet/config.json", unet_config)):
        if data is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(json.dumps(data))
    return str(root / UNET_FILE)


SD_PIPELINE = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.35.0",
               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}


@pytest.mark.parametrize("files,expected", [
    ({"model_index": {**SD_PIPELINE, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]},
      "scheduler": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0}}, "sd-flow-alpha"),
    ({"model_index": {**SD_PIPELINE, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}},
     "sd-flow-alpha"),
    ({"model_index": {**SD_PIPELINE, "_class_name": "RectifiedFlowPipeline"}}, "instaflow"),
])
def test_pipeline_folder_config_names_the_variant(tmp_path, files, expected):
    found = variant_from_pipeline_folder(_pipeline(tmp_path, **files))
    assert found is not None and found[0].name == expected, found


@pytest.mark.parametrize("files", [
    {},  # unet/ only (Lune's published folders)
    {"model_index": {**SD_PIPELINE, "scheduler": ["diffusers", "PNDMScheduler"]},
     "scheduler": {"_class_name": "PNDMScheduler"}},  # a plain SD1.5 pipeline
    {"model_index": {**SD_PIPELINE, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]},
     "scheduler": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}},  # someone's own flow model
])
def test_pipeline_folder_without_a_name_gives_no_hint(tmp_path, files):
    assert variant_from_pipeline_folder(_pipeline(tmp_path, **files)) is None


# ``_name_or_path`` records where the weights were loaded FROM (for a finetune: the model it started from).
LOADED_FROM = [
    {"model_index": {**SD_PIPELINE, "_name_or_path": "AbstractPhil/sd15-flow-lune"}},
    {"unet_config": {"_class_name": "UNet2DConditionModel", "_name_or_path": "AbstractPhil/sd15-flow-lune"}},
    {"model_index": {**SD_PIPELINE, "_name_or_path": "XCLiu/2_rectified_flow_from_sd_1_5"}},
    {"unet_config": {"_name_or_path": "spacepxl/sd15-flow-alpha-finetune"}},
]


@pytest.mark.parametrize("files", LOADED_FROM)
def test_name_or_path_is_never_read(tmp_path, files):
    assert variant_from_pipeline_folder(_pipeline(tmp_path, **files)) is None


@pytest.mark.parametrize("files", LOADED_FROM[:2])
def test_lune_flux_folder_whose_config_names_lune_is_not_given_the_lune_multiplier(tmp_path, files):
    """A lune-flux continuation saved by diffusers keeps ``_name_or_path`` = the lune repo it was loaded from."""
    path = _pipeline(tmp_path, name="AbstractPhil_sd15-flow-lune-flux", **files)
    found = variant_from_pipeline_folder(path)
    relative = "AbstractPhil_sd15-flow-lune-flux/" + UNET_FILE
    chosen, reason = found or variants.detect_variant(relative)
    assert chosen.name == "lune-flux", reason
    assert chosen.latent_multiplier == 1.0
    neutral, reason = (variant_from_pipeline_folder(_pipeline(tmp_path, name="my_continuation", **files))
                       or variants.detect_variant("my_continuation/" + UNET_FILE))
    assert neutral.name != "lune" and neutral.latent_multiplier == 1.0, reason


def test_unreadable_pipeline_json_is_ignored_not_fatal(tmp_path):
    path = _pipeline(tmp_path)
    (tmp_path / "pipeline" / "model_index.json").write_text("{not json")
    assert variant_from_pipeline_folder(path) is None


def test_pipeline_root_only_for_unet_subfolders(tmp_path):
    assert pipeline_root(str(tmp_path / "p" / UNET_FILE)) == str(tmp_path / "p")
    assert pipeline_root(str(tmp_path / "model.safetensors")) is None
