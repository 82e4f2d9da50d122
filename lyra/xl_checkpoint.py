"""Reading Lyra-XL checkpoints: detect the layout from the keys, read the sizes from the shapes, load.

Published forms (all accepted): ``model.pt`` (a trainer dict with ``model_state_dict``, or a bare state dict) with
``config.json`` beside it; ``weights/<name>.safetensors`` with ``config.json`` beside it or one folder up (the
Illustrious repository). Files are read by :mod:`lune.safe_read` through :func:`lyra.checkpoint.read_checkpoint`
(weights-only unpickling). ``cross_modal_projections.*`` (a training loss only; in the published v2 files) are
dropped. The layout comes from the keys, not from config.json (both v2 generations say ``adaptive_cantor``):

* ``fusion.out_projs.*`` and ``fusion.binding_mask`` → ``v2-hard``
* ``encoders.*`` with ``fusion.alphas.*`` and one ``fusion.out_proj`` → ``v2-soft``
* ``encoder.*``, ``fc_mu`` and modalities clip_l/clip_g/t5_xl → ``v1-xl``
* modalities clip/t5 → Lyra v1 for SD1.5 (refused here: that is :func:`lyra.load_lyra`'s)

From config.json only what the shapes cannot tell: ``fusion_heads`` (default 8), the modality order
(``modality_dims``; default the published order), the T5 length (``modality_seq_lens`` / ``seq_len``) and the CLIP
layer (``clip_skip``: 2 = penultimate; default: penultimate for v2-hard — Illustrious, trained with clip_skip 2 —
and the final layer with its LayerNorm for the others, trained on ``last_hidden_state``).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Mapping

import torch

from .checkpoint import OPTIONAL_PREFIXES, read_checkpoint
from .errors import LyraCheckpointError
from .xl_model import LyraXL, build_xl
from .xl_spec import CLIP_LAST, CLIP_PENULTIMATE, V1_XL, V2_HARD, V2_SOFT, XL_MODALITIES, LyraXLSpec

logger = logging.getLogger("lune.lyra")

__all__ = ["detect_kind", "find_xl_config", "is_sd15_lyra", "load_any_lyra", "load_lyra_xl", "spec_from_state"]

_FIX = ("Use a published SDXL Lyra (AbstractPhil/vae-lyra-sdxl-t5xl, vae-lyra-xl-adaptive-cantor or "
        "vae-lyra-xl-adaptive-cantor-illustrious) with its config.json.")
_PROJ = re.compile(r"^fusion\.modality_projections\.([^.]+)\.weight$")


def _modalities(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return {m.group(1): int(state[k].shape[1]) for k in state if (m := _PROJ.match(k))}


def is_sd15_lyra(state: Mapping[str, torch.Tensor]) -> bool:
    """True for Lyra v1's SD1.5 layout (modalities clip + t5)."""
    return set(_modalities(state)) == {"clip", "t5"}


def detect_kind(state: Mapping[str, torch.Tensor], path: str = "file") -> str:
    """``v1-xl`` | ``v2-soft`` | ``v2-hard`` from the keys; LyraCheckpointError naming what the file is instead."""
    keys = set(state)
    mods = set(_modalities(state))
    if not mods:
        raise LyraCheckpointError(f"{path} has no fusion.modality_projections.*: it is not a Lyra checkpoint. {_FIX}")
    if mods == {"clip", "t5"}:
        raise LyraCheckpointError(
            f"{path} is Lyra v1 for SD1.5 (CLIP-L + t5-base), not an SDXL Lyra. Use it with Lyra Encode "
            f"(CLIP-L + T5) and an SD1.5 model, or load an SDXL Lyra for Lyra Encode SDXL.")
    has_v2 = any(k.startswith("encoders.") for k in keys) and any(k.startswith("fusion.alphas.") for k in keys)
    if has_v2 and mods == set(XL_MODALITIES[V2_HARD]):
        if any(k.startswith("fusion.out_projs.") for k in keys) and "fusion.binding_mask" in keys:
            return V2_HARD
        if "fusion.out_proj.weight" in keys:
            return V2_SOFT
        raise LyraCheckpointError(f"{path} is an adaptive-Cantor Lyra without fusion.out_proj or fusion.out_projs "
                                  f"+ fusion.binding_mask: the file is incomplete. {_FIX}")
    if "encoder.0.weight" in keys and "fc_mu.weight" in keys and mods == set(XL_MODALITIES[V1_XL]):
        return V1_XL
    raise LyraCheckpointError(
        f"{path} is a Lyra checkpoint with modalities {sorted(mods)} and a layout this pack does not know "
        f"(known: clip_l/clip_g/t5_xl Cantor, clip_l/clip_g/t5_xl_l/t5_xl_g adaptive Cantor). {_FIX}")


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of Linear blocks of a Lyra MLP stack (Linear at indices 0, 4, 8, ...)."""
    idx = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix) and k.endswith(".weight")}
    linear = [i for i in idx if i % 4 == 0]
    if not linear:
        raise LyraCheckpointError(f"no {prefix}* layers in the file. {_FIX}")
    return max(linear) // 4 + 1


def _config_int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LyraCheckpointError(f"config.json: {key} must be a positive integer, got {value!r}. {_FIX}")
    return value


def spec_from_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None,
                    path: str = "file") -> LyraXLSpec:
    """The :class:`LyraXLSpec` of a state dict (sizes from shapes, the rest from ``config``)."""
    cfg = dict(config or {})
    kind = detect_kind(state, path)
    dims = _modalities(state)
    order = list(cfg.get("modality_dims") or XL_MODALITIES[kind])
    if set(order) != set(dims):
        order = list(XL_MODALITIES[kind])
    hidden = int(state["fusion.q_proj.weight"].shape[0])
    mu_key = "fc_mu.weight" if kind == V1_XL else "fc_mus.clip_l.weight"
    latent = int(state[mu_key].shape[0])
    enc_prefix = "encoder." if kind == V1_XL else "encoders.clip_l."
    heads = _config_int(cfg, "fusion_heads", 8)
    if hidden % heads:
        raise LyraCheckpointError(f"{path}: hidden width {hidden} is not divisible by fusion_heads {heads} "
                                  f"(config.json). {_FIX}")
    seq = cfg.get("modality_seq_lens") or {}
    t5_name = "t5_xl" if kind == V1_XL else "t5_xl_l"
    default_t5 = 77 if kind == V1_XL else 512
    t5_tokens = seq.get(t5_name, cfg.get("seq_len", default_t5) if kind == V1_XL else default_t5)
    if isinstance(t5_tokens, bool) or not isinstance(t5_tokens, int) or not 77 <= t5_tokens <= 4096:
        raise LyraCheckpointError(f"{path}: the T5 length in config.json is {t5_tokens!r}; expected 77..4096. {_FIX}")
    skip = cfg.get("clip_skip")
    if skip in (1, 2):
        clip_layer = CLIP_PENULTIMATE if skip == 2 else CLIP_LAST
    else:
        clip_layer = CLIP_PENULTIMATE if kind == V2_HARD else CLIP_LAST
    bindings = []
    for key in sorted(k for k in state if k.startswith("fusion.betas.")):
        pair = key[len("fusion.betas."):]
        match = [(t, s) for t in order for s in order if f"{t}_{s}" == pair]
        if len(match) != 1:
            raise LyraCheckpointError(f"{path}: cannot tell which modalities {key} binds. {_FIX}")
        bindings.append(match[0])
    return LyraXLSpec(kind=kind, modality_dims={n: dims[n] for n in order}, hidden_dim=hidden, latent_dim=latent,
                      encoder_layers=_count_blocks(state, enc_prefix),
                      decoder_layers=_count_blocks(state, "decoders.clip_l."), fusion_heads=heads,
                      t5_tokens=t5_tokens, clip_layer=clip_layer, bindings=tuple(bindings))


def find_xl_config(weights_path: str) -> str | None:
    """``config.json`` beside the weights, else one folder up (``weights/<file>`` layout); None if neither."""
    folder = os.path.dirname(os.path.abspath(weights_path))
    for cand in (os.path.join(folder, "config.json"), os.path.join(os.path.dirname(folder), "config.json")):
        if os.path.isfile(cand):
            return cand
    return None


def _read_config(path: str | None, embedded: Mapping[str, Any] | None) -> tuple[dict, str]:
    if path is None:
        return (dict(embedded), "config embedded in the weights") if isinstance(embedded, Mapping) else ({}, "none")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LyraCheckpointError(f"{path} is not readable JSON ({exc}). Replace it with the config.json of the "
                                  f"model's repository.") from exc
    if not isinstance(data, dict):
        raise LyraCheckpointError(f"{path} is not a JSON object. Replace it with the model's config.json.")
    return data, path


def _check_state(state: dict, model: LyraXL, path: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LyraCheckpointError(f"{path} does not match the {model.spec.kind} layout: missing {missing[:6]}, "
                                  f"unexpected {unexpected[:6]}. The file is incomplete or another model. {_FIX}")
    bad = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}" for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise LyraCheckpointError(f"{path}: tensor shapes disagree with the layout: {bad[:4]}. {_FIX}")
    nonfinite = sorted(k for k, v in state.items() if v.is_floating_point() and k != "fusion.binding_mask"
                       and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise LyraCheckpointError(f"{path}: tensors {nonfinite[:6]} contain NaN or Inf; the weights are corrupt. "
                                  f"Download the file again.")
    routes = state["fusion.modality_routes"]
    m = len(model.spec.modality_names)
    if routes.is_floating_point() or routes.dim() != 2 or routes.shape[0] != m or int(routes.min()) < 0 \
            or int(routes.max()) >= m:
        raise LyraCheckpointError(f"{path}: fusion.modality_routes {routes.tolist()} is not a routing table of "
                                  f"{m} modalities; the file is corrupt. Download it again.")


def load_lyra_xl(path: str, config_path: str | None = None, device: str | torch.device = "cpu",
                 state: dict | None = None, embedded: Mapping[str, Any] | None = None) -> LyraXL:
    """Load a Lyra-XL file into an eval-mode, frozen fp32 module on ``device`` (``model.spec`` says what it is).

    ``config_path`` None: :func:`find_xl_config`. ``state`` / ``embedded`` (optional): tensors and embedded config
    already read from ``path``."""
    if state is None:
        raw = read_checkpoint(path)
        state, embedded = raw.state, raw.embedded_config
    dropped = [k for k in state if k.startswith(OPTIONAL_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(OPTIONAL_PREFIXES)}
    cfg, source = _read_config(config_path or find_xl_config(path), embedded)
    spec = spec_from_state(state, cfg, path)
    model = build_xl(spec)
    _check_state(state, model, path)
    model.load_state_dict(state, strict=True)
    if hasattr(model.fusion, "refresh_bindings"):
        model.fusion.refresh_bindings()
    model = model.to(device=device, dtype=torch.float32)
    model.train(False)
    model.requires_grad_(False)
    logger.info("Lyra-XL: %s is %s (%d modalities, hidden %d, latent %d, T5 %d tokens, CLIP %s; config from %s; "
                "%d training-only tensors ignored)", path, spec.kind, len(spec.modality_dims), spec.hidden_dim,
                spec.latent_dim, spec.t5_tokens, spec.clip_layer, source, len(dropped))
    return model


def load_any_lyra(path: str, config_path: str | None = None, device: str | torch.device = "cpu"):
    """Lyra v1 for SD1.5 (:func:`lyra.load_lyra`) or a Lyra-XL (:func:`load_lyra_xl`), told apart by the keys."""
    from .checkpoint import load_lyra

    raw = read_checkpoint(path)
    if is_sd15_lyra(raw.state) or not _modalities(raw.state):  # v1, or no Lyra at all: the v1 reader says why
        return load_lyra(path, config=config_path, device=device, raw=raw)
    return load_lyra_xl(path, config_path, device, state=raw.state, embedded=raw.embedded_config)
