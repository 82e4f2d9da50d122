"""Low-memory drop-ins for ComfyUI's two model builders, used by Load Lune Model.

``load_unet``       ≙ ``comfy.sd.load_diffusion_model_state_dict(sd, metadata=…)``   (UNet-only files)
``load_checkpoint`` ≙ ``comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True, …)``

Same detection, key conversion, dtypes, model classes and ModelPatcher as the stock calls — they are made of
ComfyUI's own functions (comfy/sd.py, comfy/model_detection.py, comfy/model_management.py, comfy/utils.py), in
the order comfy/sd.py uses them. One step differs: the stock call copies the whole state dict into the model with
one ``load_state_dict`` while every source tensor stays resident (source + model ≈ 2× the fp32 UNet for a
memory-mapped fp32 file). Here the copy runs chunk by chunk (``lune.chunked_fill``) and each finished chunk's
memory-mapped pages are given back (``lune.mapped_pages``), so the peak is about the model alone.

Anything this path does not cover (scaled-fp8 or per-layer quantized files, custom operations, transformer models
that need the diffusers-MMDiT conversion) goes to the stock call unchanged, with a log line.
"""
from __future__ import annotations

import logging

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.utils
import torch

from ..lune.chunked_fill import fill_module
from ..lune.mapped_pages import release_file_pages

log = logging.getLogger("lune")

SUPPORTED_OPTIONS = frozenset({"dtype"})


def _stock_only_reason(sd: dict, metadata: dict | None, model_options: dict) -> str | None:
    """Why the low-memory path must not run (checked before anything can change ``sd``), or None."""
    extra = set(model_options) - SUPPORTED_OPTIONS
    if extra:
        return f"model options {sorted(extra)}"
    if any(k.endswith("scaled_fp8") for k in sd):
        return "scaled-fp8 weights"
    if metadata and comfy.model_detection.detect_layer_quantization(dict(metadata)):  # a copy: it pops the entry
        return "per-layer quantized weights"
    return None


def _fill(model, unet_sd: dict, source: str) -> None:
    """``BaseModel.load_model_weights(sd, "")`` (comfy/model_base.py), copying chunk by chunk."""
    to_load = model.model_config.process_unet_state_dict(unet_sd)
    missing, unexpected = fill_module(model.diffusion_model, to_load)
    if missing:
        log.warning("Lune loader: %s: UNet weights missing from the file: %s", source, missing)
    if unexpected:
        log.warning("Lune loader: %s: unexpected UNet weights ignored: %s", source, unexpected)


def _unet_dtypes(model_config, parameters: int, weight_dtype, load_device, dtype):
    """(unet_dtype, manual_cast_dtype) exactly as comfy.sd chooses them."""
    if dtype is None:
        dtype = comfy.model_management.unet_dtype(model_params=parameters,
                                                  supported_dtypes=list(model_config.supported_inference_dtypes),
                                                  weight_dtype=weight_dtype)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    return dtype, manual_cast


def load_unet(sd: dict, metadata: dict | None = None, model_options: dict | None = None):
    """What ``comfy.sd.load_diffusion_model_state_dict(sd, model_options, metadata)`` returns (a ModelPatcher or
    None when ComfyUI does not recognise the model), built with about the UNet's own bytes of RAM.

    Accepts the same state dicts: LDM keys with or without ``model.diffusion_model.``, or diffusers UNet keys
    (converted by ComfyUI's ``unet_to_diffusers`` map). Like the stock call, it takes the tensors out of ``sd``.
    """
    model_options = model_options or {}
    reason = _stock_only_reason(sd, metadata, model_options)
    if reason is not None:
        log.info("Lune loader: %s: using ComfyUI's standard UNet load (higher peak memory)", reason)
        return comfy.sd.load_diffusion_model_state_dict(sd, model_options=model_options, metadata=metadata)

    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    unprefixed = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
    if unprefixed:
        sd = unprefixed
    parameters = comfy.utils.calculate_parameters(sd)
    weight_dtype = comfy.utils.weight_dtype(sd)
    load_device = comfy.model_management.get_torch_device()

    model_config = comfy.model_detection.model_config_from_unet(sd, "", metadata=metadata)
    if model_config is not None:
        unet_sd = sd
    elif comfy.model_detection.convert_diffusers_mmdit(sd, "") is not None:
        log.info("Lune loader: diffusers transformer keys: using ComfyUI's standard UNet load (higher peak memory)")
        return comfy.sd.load_diffusion_model_state_dict(sd, model_options=model_options, metadata=metadata)
    else:
        model_config = comfy.model_detection.model_config_from_diffusers_unet(sd)
        if model_config is None:
            return None
        unet_sd = {}
        for diffusers_key, ldm_key in comfy.utils.unet_to_diffusers(model_config.unet_config).items():
            if diffusers_key in sd:
                unet_sd[ldm_key] = sd.pop(diffusers_key)
            else:
                log.warning("Lune loader: diffusers UNet key %s (%s) is missing", diffusers_key, ldm_key)

    offload_device = comfy.model_management.unet_offload_device()
    dtype, manual_cast = _unet_dtypes(model_config, parameters, weight_dtype, load_device,
                                      model_options.get("dtype"))
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(unet_sd, "").to(offload_device)
    _fill(model, unet_sd, "UNet")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_checkpoint(sd: dict, metadata: dict | None = None, embedding_directory=None):
    """``(model, clip, vae)`` as ``comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
    metadata=…, embedding_directory=…)`` returns them, built with about the models' own bytes of RAM.

    CLIP and VAE come from the stock call itself (``output_model=False``); their source pages are given back
    before the UNet is built and filled chunk by chunk. Returns None where the stock call does.
    """
    reason = _stock_only_reason(sd, metadata, {})
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    model_config = None if reason else comfy.model_detection.model_config_from_unet(sd, prefix, metadata=metadata)
    if model_config is None:
        if reason:
            log.info("Lune loader: %s: using ComfyUI's standard checkpoint load (higher peak memory)", reason)
        out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True, metadata=metadata,
                                                    embedding_directory=embedding_directory)
        return None if out is None else out[:3]

    # The stock call pops the CLIP and VAE tensors out of ``sd`` (comfy.utils.state_dict_prefix_replace), but
    # their pages stay mapped while any tensor of the file lives: keep a list to give them back afterwards.
    clip_vae_sources = [t for k, t in sd.items() if not k.startswith(prefix)]
    _, clip, vae, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
                                                            output_model=False, metadata=metadata,
                                                            embedding_directory=embedding_directory)
    release_file_pages(clip_vae_sources)  # their values now live in the CLIP and VAE models
    del clip_vae_sources

    parameters = comfy.utils.calculate_parameters(sd, prefix)
    weight_dtype = comfy.utils.weight_dtype(sd, prefix)
    load_device = comfy.model_management.get_torch_device()
    dtype, manual_cast = _unet_dtypes(model_config, parameters, weight_dtype, load_device, None)
    model_config.set_inference_dtype(dtype, manual_cast)
    model_config.custom_operations = None
    initial_device = comfy.model_management.unet_inital_load_device(parameters, dtype)
    model = model_config.get_model(sd, prefix, device=initial_device)
    unet_sd = {k[len(prefix):]: sd.pop(k) for k in list(sd) if k.startswith(prefix)}
    _fill(model, unet_sd, "checkpoint UNet")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                               offload_device=comfy.model_management.unet_offload_device())
    if initial_device != torch.device("cpu"):
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return patcher, clip, vae
