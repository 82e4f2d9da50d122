"""The ``[download]`` entries of the SD models: repository, model folder, which files (``lune.download_rules``) and
the variant it implies. One table, so a loader list, a reload stamp and a bundled template cannot disagree (Lyra's
entry is built from ``lyra.config`` by the node layer, ``nodes/paths.py``).

Sources: the model cards and file listings of the repositories (README "Workflows" lists them).
"""
from __future__ import annotations

from .download_rules import DIFFUSERS_UNET, FIXED, NEWEST_EPOCH, SINGLE_FILE, DownloadEntry
from .variants import VARIANTS

DIFFUSION_MODELS = "diffusion_models"
CHECKPOINTS = "checkpoints"
INSTAFLOW_LICENCE = "CC-BY-NC-4.0, non-commercial"

# Load Lune Model: the published file of each variant that has a fixed one (lune, lune-flux) ...
_FIXED_VARIANTS = tuple(
    DownloadEntry(v.hf_repo, DIFFUSION_MODELS, FIXED, (v.hf_unet_file,), variant=v.name)
    for v in VARIANTS.values() if v.hf_unet_file)
# ... and the repositories whose file names change with each upload.
MODEL_ENTRIES: tuple[DownloadEntry, ...] = _FIXED_VARIANTS + (
    DownloadEntry("AbstractPhil/sd15-flow-matching", DIFFUSION_MODELS, NEWEST_EPOCH, variant="sol",
                  what="Sol: the newest epoch's training state"),
    DownloadEntry("XCLiu/instaflow_0_9B_from_sd_1_5", DIFFUSION_MODELS, DIFFUSERS_UNET, variant="instaflow",
                  licence=INSTAFLOW_LICENCE, what="InstaFlow-0.9B: the unet/ folder of the diffusers pipeline"),
    DownloadEntry("XCLiu/2_rectified_flow_from_sd_1_5", DIFFUSION_MODELS, DIFFUSERS_UNET, variant="instaflow",
                  licence=INSTAFLOW_LICENCE, what="2-Rectified Flow: the unet/ folder of the diffusers pipeline"),
)
# clip_vae_from: the SD1.5 checkpoint ComfyUI's own templates use (its CLIP and VAE are stock SD1.5).
SD15_COMPANION = DownloadEntry("Comfy-Org/stable-diffusion-v1-5-archive", CHECKPOINTS, FIXED,
                               ("v1-5-pruned-emaonly-fp16.safetensors",), what="SD1.5 (CLIP and VAE donor)")
# Load Checkpoint (Lune downloads): single-file checkpoints that stock loaders cannot fetch.
SQCU_SDXL_VPRED = DownloadEntry("SQCU/sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr", CHECKPOINTS, SINGLE_FILE,
                                what="SDXL v-prediction, zero terminal SNR: its single-file checkpoint")
CHECKPOINT_ENTRIES: tuple[DownloadEntry, ...] = (SQCU_SDXL_VPRED, SD15_COMPANION)


def by_label(label: str, entries: tuple[DownloadEntry, ...]) -> DownloadEntry | None:
    """The entry a list value names, or None for a file name."""
    return next((e for e in entries if e.label == label), None)


def labels(entries: tuple[DownloadEntry, ...]) -> list[str]:
    return [e.label for e in entries]
