"""ComfyUI node classes of the pack — the only place that imports comfy."""
from __future__ import annotations

from . import paths, sampler
from .checkpoint_loader import LuneCheckpointLoader
from .convert import LuneConvertToSafetensors
from .discrete_schedule import LuneDiscreteSchedule
from .handoff import LuneLatentHandoff
from .latent import LuneLatentMultiply
from .loader import LuneModelLoader
from .lyra_nodes import LyraEncode, LyraLoader
from .lyra_t5xl import LyraT5XLLoader
from .lyra_xl_nodes import LyraEncodeSDXL
from .merge import LuneMergeModels
from .sampler import LuneSamplerAdapter
from .shift import LuneShift

NODE_CLASS_MAPPINGS = {
    "LuneModelLoader": LuneModelLoader,
    "LuneShift": LuneShift,
    "LuneLatentMultiply": LuneLatentMultiply,
    "LuneLatentHandoff": LuneLatentHandoff,
    "LuneSamplerAdapter": LuneSamplerAdapter,
    "LuneConvertToSafetensors": LuneConvertToSafetensors,
    "LuneMergeModels": LuneMergeModels,
    "LyraLoader": LyraLoader,
    "LyraEncode": LyraEncode,
    "LyraT5XLLoader": LyraT5XLLoader,
    "LyraEncodeSDXL": LyraEncodeSDXL,
    "LuneDiscreteSchedule": LuneDiscreteSchedule,
    "LuneCheckpointLoader": LuneCheckpointLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LuneModelLoader": "Load Lune Model",
    "LuneShift": "Lune Flow Shift",
    "LuneLatentMultiply": "Lune Latent Multiply",
    "LuneLatentHandoff": "Lune Latent Hand-off",
    "LuneSamplerAdapter": "Lune Sampler Adapter",
    "LuneConvertToSafetensors": "Lune Convert to Safetensors",
    "LuneMergeModels": "Lune Merge Models",
    "LyraLoader": "Load Lyra (CLIP+T5 fusion)",
    "LyraEncode": "Lyra Encode (CLIP-L + T5)",
    "LyraT5XLLoader": "Load Lyra T5-XL (flan-t5-xl)",
    "LyraEncodeSDXL": "Lyra Encode SDXL (CLIP-L + CLIP-G + T5-XL)",
    "LuneDiscreteSchedule": "Lune Discrete Schedule (betas · v-pred · ZTSNR)",
    "LuneCheckpointLoader": "Load Checkpoint (Lune downloads)",
}


def setup() -> None:
    """Side effects ComfyUI needs once: model folders and the stock sampler/scheduler list entries."""
    paths.register_folders()
    sampler.register_in_stock_lists()
