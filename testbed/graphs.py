"""API-format graphs used by the integration tests (node ids are strings, links are [node_id, output_index])."""
from __future__ import annotations


def txt2img(model_name: str, *, variant: str = "auto", shift: float = 2.0, clip_vae_from: str = "(from model file)",
            sampler: str = "euler", scheduler: str = "simple", steps: int = 4, cfg: float = 7.5, seed: int = 0,
            size: int = 64, batch: int = 1, latent_mode: str = "fixed", multiplier: float = 1.0,
            positive: str = "a photo of a cat", negative: str = "", prefix: str = "lune_test",
            save_latent: bool = False) -> dict:
    g = {
        "1": {"class_type": "LuneModelLoader", "inputs": {"model_name": model_name, "variant": variant,
                                                          "shift": shift, "clip_vae_from": clip_vae_from}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                   "sampler_name": sampler, "scheduler": scheduler,
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "LuneLatentMultiply", "inputs": {"samples": ["5", 0], "mode": latent_mode,
                                                             "multiplier": multiplier, "model": ["1", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    }
    if save_latent:
        g["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"{prefix}_latent"}}
    return g


def with_adapter(graph: dict, steps: int = 4, cfg: float = 7.5, seed: int = 0) -> dict:
    """Replace the KSampler of ``txt2img`` by LuneSamplerAdapter → SamplerCustom."""
    g = dict(graph)
    g["10"] = {"class_type": "LuneSamplerAdapter", "inputs": {"model": ["1", 0], "steps": steps, "denoise": 1.0}}
    g["5"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["1", 0], "add_noise": True, "noise_seed": seed, "cfg": cfg, "positive": ["2", 0],
        "negative": ["3", 0], "sampler": ["10", 0], "sigmas": ["10", 1], "latent_image": ["4", 0]}}
    return g
