"""Where the bundled workflows' model files come from.

* Pack loaders (Load Lune Model's model_name and clip_vae_from, Load Lyra, Load Checkpoint (Lune downloads)) name a
  ``[download]`` entry of the pack: one click on Queue fetches the files into the folder the loader reads, under
  ``models/<folder>/<owner>_<repo>/`` — whatever their suffix, however deep their path in the repository. These are
  the labels of ``lune.download_entries`` (Lyra's from ``lyra.config``), so a template cannot name an entry the
  loader does not list.
* Stock loaders (CLIPLoader, CheckpointLoaderSimple) carry ``properties.models`` = ``{name, url, directory}`` for
  the frontend's Missing Models dialog, which downloads only ``.safetensors``/``.sft`` names and saves them as
  ``<directory>/<name>`` (desktop app) or as the URL's last segment in the browser's downloads folder: so the names
  are flat, and equal the URL's last segment where a file can be named so (``tests/integration/test_workflows.py``
  checks every template against the installed frontend's own rules).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from comfyui_lune.lune import download_entries
from comfyui_lune.lyra.config import PUBLISHED_REPO as LYRA_REPO


@dataclass(frozen=True)
class ModelSource:
    name: str       # the widget value: a flat file name in the model folder
    url: str        # a direct download (Hugging Face "resolve" URL)
    directory: str  # ComfyUI model folder

    def as_property(self) -> dict:
        return asdict(self)


def hf_url(repo_id: str, filename: str) -> str:
    return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"


def _label(repo: str, among=download_entries.MODEL_ENTRIES + download_entries.CHECKPOINT_ENTRIES) -> str:
    return next(e.label for e in among if e.repo == repo)


def lune_variant_entry(variant: str) -> str:
    """Load Lune Model's ``[download]`` entry for a variant (the first when several repositories have it)."""
    return next(e.label for e in download_entries.MODEL_ENTRIES if e.variant == variant)


LUNE_ENTRY = lune_variant_entry("lune")              # the author's training state (10 GB)
LUNE_FLUX_ENTRY = lune_variant_entry("lune-flux")    # the recommended lune-flux UNet (diffusers, five folders deep)
SOL_ENTRY = lune_variant_entry("sol")                # the newest epoch's training state
INSTAFLOW_ENTRY = _label("XCLiu/instaflow_0_9B_from_sd_1_5")  # unet/ of the diffusers repo; label states CC-BY-NC
SD15_COMPANION_ENTRY = download_entries.SD15_COMPANION.label  # clip_vae_from: SD1.5's CLIP and VAE
SQCU_ENTRY = download_entries.SQCU_SDXL_VPRED.label  # Load Checkpoint (Lune downloads)
LYRA_ENTRY = f"[download] {LYRA_REPO}"               # model.pt + config.json into models/lyra/AbstractPhil_vae-lyra/

# Any SD1.5 checkpoint; this is the one ComfyUI's own templates use (LuneMergeModels' base, a pack widget without
# [download] entries, still names it through properties.models).
SD15_COMPANION = ModelSource(
    "v1-5-pruned-emaonly-fp16.safetensors",
    hf_url("Comfy-Org/stable-diffusion-v1-5-archive", "v1-5-pruned-emaonly-fp16.safetensors"), "checkpoints")
# Lyra was trained on the original t5-base encoder (not flan-t5); ComfyUI loads it with CLIPLoader type stable_audio.
# The repository names the file model.safetensors: the browser saves it under that name (the Lyra note says to
# rename it), the desktop app as text_encoders/t5_base.safetensors.
T5_BASE = ModelSource("t5_base.safetensors", hf_url("google-t5/t5-base", "model.safetensors"), "text_encoders")
# The SDXL base the cross-family refine templates start from (or end with).
SDXL_BASE = ModelSource("sd_xl_base_1.0.safetensors",
                        hf_url("stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors"), "checkpoints")
# SDXL Lyra (Illustrious) and its flan-t5-xl: the pack loaders' own [download] entries (the frontend cannot fetch a
# config.json one folder above the weights, nor a .pt).
LYRA_XL_DOWNLOAD = "[download] AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious"
T5XL_DOWNLOAD = "[download] QQGYLab/ELLA"
