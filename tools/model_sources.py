"""Where the bundled workflows' model files come from: the name a node's widget holds, the URL the frontend's
missing-models dialog offers, and the ComfyUI model folder it belongs in (a node's ``properties.models``).

Lune files are named exactly as the pack's ``[download]`` entries create them: the author's file path inside the
Hugging Face repo, under ``models/diffusion_models/<owner>_<repo>/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from lune.variants import get_variant


@dataclass(frozen=True)
class ModelSource:
    name: str       # the widget value: path relative to the model folder
    url: str        # a direct download (Hugging Face "resolve" URL)
    directory: str  # ComfyUI model folder

    def as_property(self) -> dict:
        return asdict(self)


def hf_url(repo_id: str, filename: str) -> str:
    return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"


def download_name(repo_id: str, filename: str) -> str:
    """The name the loader lists a ``[download]`` file under: ``<owner>_<repo>/<path in the repo>``."""
    return f"{repo_id.replace('/', '_')}/{filename}"


# The frontend's missing-models dialog downloads only these suffixes (frontend 1.32: "Only allowed suffixes are").
FRONTEND_DOWNLOADABLE = (".safetensors", ".sft")
DOWNLOAD_ENTRY_PREFIX = "[download] "


def lune_variant_file(variant: str) -> ModelSource | str:
    """The published file of a variant: a ModelSource the frontend can fetch, or — for pickles such as the
    lune training state, which the frontend refuses to download — the loader's own ``[download]`` entry."""
    v = get_variant(variant)
    if not v.hf_unet_file:
        raise ValueError(f"variant {variant!r} has no published file the pack knows")
    if not v.hf_unet_file.endswith(FRONTEND_DOWNLOADABLE):
        return f"{DOWNLOAD_ENTRY_PREFIX}{v.hf_repo}"
    return ModelSource(download_name(v.hf_repo, v.hf_unet_file), hf_url(v.hf_repo, v.hf_unet_file), "diffusion_models")


# Any SD1.5 checkpoint gives UNet-only Lune files their CLIP and VAE; this is the one ComfyUI's own templates use.
SD15_COMPANION = ModelSource(
    "v1-5-pruned-emaonly-fp16.safetensors",
    hf_url("Comfy-Org/stable-diffusion-v1-5-archive", "v1-5-pruned-emaonly-fp16.safetensors"), "checkpoints")
# Lyra was trained on the original t5-base encoder (not flan-t5); ComfyUI loads it with CLIPLoader type stable_audio.
T5_BASE = ModelSource("t5_base.safetensors", hf_url("google-t5/t5-base", "model.safetensors"), "text_encoders")
LYRA_REPO = "AbstractPhil/vae-lyra"
LYRA = ModelSource(download_name(LYRA_REPO, "model.pt"), hf_url(LYRA_REPO, "model.pt"), "lyra")
# The SDXL base the cross-family refine templates start from (or end with).
SDXL_BASE = ModelSource("sd_xl_base_1.0.safetensors",
                        hf_url("stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors"), "checkpoints")
# SDXL Lyra (Illustrious) and its flan-t5-xl: the pack loaders' own [download] entries (the frontend cannot fetch a
# config.json one folder above the weights, nor a .pt).
LYRA_XL_DOWNLOAD = f"{DOWNLOAD_ENTRY_PREFIX}AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious"
T5XL_DOWNLOAD = f"{DOWNLOAD_ENTRY_PREFIX}QQGYLab/ELLA flan-t5-xl"
