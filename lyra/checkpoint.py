"""Reading and writing Lyra v1 checkpoints (AbstractPhil/vae-lyra: ``model.pt`` + ``config.json``).

Accepted inputs of :func:`load_lyra`:

* a directory holding ``model.safetensors`` or ``model.pt`` (+ ``config.json``),
  e.g. a Hugging Face snapshot of ``AbstractPhil/vae-lyra``;
* the trainer ``model.pt``: a torch zip pickle
  ``{model_state_dict, optimizer_state_dict, global_step, epoch, best_loss,
  config, scheduler_state_dict}`` whose storages are tagged ``cuda:0``;
* a bare state-dict ``.pt`` / ``.pth``;
* a ``.safetensors`` file (optionally with the config in its metadata, as
  written by the test bed's ``save_lyra_safetensors``).

Files are read by :mod:`lune.safe_read`, shared with the Lune loader: the format
is detected from the file's first bytes, not its extension; pickles are only
ever read with ``torch.load(weights_only=True, map_location="cpu")``, zip
pickles additionally with ``mmap=True`` so the ~136 MB of AdamW moments in the
trainer file are mapped, never read.

Config priority: explicit ``config`` argument > ``<stem>.json`` / ``config.json``
beside the weights > config embedded in the file (``model.pt["config"]`` or
safetensors metadata) > the published vae-lyra defaults. The chosen source is logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping

import torch

from ..lune import errors as _lune_errors
from ..lune import safe_read
from .cantor import cantor_coordinates, routes_problem
from .config import LyraConfig
from .errors import LyraCheckpointError, LyraConfigError, LyraUnsafeFileError
from .model import LyraVAE

logger = logging.getLogger("lune.lyra")

__all__ = [
    "LyraLoadInfo",
    "RawCheckpoint",
    "load_lyra",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "OPTIONAL_PREFIXES",
]

#: Tensors that newer author code adds for a training loss only;
#: tolerated and dropped.
OPTIONAL_PREFIXES = ("cross_modal_projections.",)
#: Containers in a trainer dict that may hold the model weights, in order of preference.
_STATE_CONTAINERS = ("model_state_dict", "state_dict", "model")
_DIR_NAMES = ("model.safetensors", "model.pt", "model.pth")
_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
#: Keys whose presence marks a JSON/dict as a Lyra (trainer) config.
_CONFIG_MARKERS = ("modality_dims", "fusion_strategy", "latent_dim", "hidden_dim", "fusion_heads")
_META_CONFIG_KEY = "lyra_config"
_LIST_LIMIT = 8
_REDOWNLOAD = "Re-download it (the published vae-lyra model.pt is 204,947,755 bytes)."


@dataclasses.dataclass(frozen=True)
class LyraLoadInfo:
    """What :func:`load_lyra` read; attached to the model as ``model.load_info``."""

    path: str
    format: str  # "torch-zip" | "torch-legacy" | "safetensors"
    container: str  # "model_state_dict", "state_dict", "model", or "bare"
    config_source: str
    global_step: int | None = None
    epoch: int | None = None
    best_loss: float | None = None
    dropped_keys: tuple[str, ...] = ()


@dataclasses.dataclass
class RawCheckpoint:
    """Tensors and metadata of one file, before any config or key checks."""

    state: dict[str, torch.Tensor]
    embedded_config: Mapping[str, Any] | None
    format: str
    container: str
    meta: dict[str, Any]


# --------------------------------------------------------------------------- paths
def resolve_checkpoint_path(path_or_dir: str | os.PathLike[str]) -> str:
    """Return the weights file for a file or directory argument.

    In a directory: ``model.safetensors`` > ``model.pt`` > ``model.pth`` >
    the only file with a checkpoint suffix. Raises :class:`LyraCheckpointError`.
    """
    path = os.fspath(path_or_dir)
    if not os.path.exists(path):
        raise LyraCheckpointError(
            f"Lyra checkpoint not found: {path}. Download AbstractPhil/vae-lyra (model.pt + config.json) "
            f"and point the loader at the file or its folder."
        )
    if not os.path.isdir(path):
        return path
    for name in _DIR_NAMES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    found = sorted(
        n for n in os.listdir(path) if n.lower().endswith(_SUFFIXES) and os.path.isfile(os.path.join(path, n))
    )
    if len(found) == 1:
        return os.path.join(path, found[0])
    if not found:
        raise LyraCheckpointError(
            f"No Lyra weights in folder {path}: expected model.pt or model.safetensors "
            f"(from AbstractPhil/vae-lyra)."
        )
    raise LyraCheckpointError(
        f"Folder {path} holds several checkpoint files {_short(found)}; rename the Lyra one to model.pt "
        f"or model.safetensors, or pass the file itself."
    )


def read_checkpoint(path: str | os.PathLike[str]) -> RawCheckpoint:
    """Read tensors (CPU, original dtype) and any embedded config from one file.

    Sniffing, safetensors validation, the weights-only ``torch.load`` and prefix stripping are
    :mod:`lune.safe_read`'s; its errors come back as :class:`LyraCheckpointError` /
    :class:`LyraUnsafeFileError` with the same message.
    """
    path = os.fspath(path)
    try:
        raw = safe_read.read_weights_file(path, advice=_REDOWNLOAD)
        found = None if raw.format == safe_read.SAFETENSORS else safe_read.find_state_dict(
            raw.content, path, _STATE_CONTAINERS)
    except _lune_errors.UnsafeCheckpointError as exc:
        raise LyraUnsafeFileError(str(exc)) from None
    except _lune_errors.LuneFormatError as exc:
        raise LyraCheckpointError(str(exc)) from None
    if raw.format == safe_read.SAFETENSORS:
        embedded = None
        if _META_CONFIG_KEY in raw.metadata:
            try:
                embedded = json.loads(raw.metadata[_META_CONFIG_KEY])
            except json.JSONDecodeError as exc:
                raise LyraCheckpointError(
                    f"{path}: the Lyra config in the safetensors metadata is not valid JSON ({exc}). "
                    f"Put the vae-lyra config.json beside the file."
                ) from exc
        return RawCheckpoint(safe_read.strip_wrapper_prefixes(raw.content), embedded, raw.format, "bare", {})

    if found is None:
        raise LyraCheckpointError(
            f"{path} has top-level entries {_short(sorted(map(str, raw.content)))} but no 'model_state_dict' and is "
            f"not a plain state dict. Use model.pt from AbstractPhil/vae-lyra."
        )
    state, container = found
    meta: dict[str, Any] = {}
    embedded = None
    if container != "bare":
        obj = raw.content
        for key in ("global_step", "epoch", "best_loss"):
            value = obj.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                meta[key] = value
        cfg = obj.get("config")
        if isinstance(cfg, Mapping):
            embedded = cfg
    return RawCheckpoint(safe_read.strip_wrapper_prefixes(state), embedded, raw.format, container, meta)


# --------------------------------------------------------------------------- config
def _looks_like_lyra_config(d: Any) -> bool:
    return isinstance(d, Mapping) and any(k in d for k in _CONFIG_MARKERS)


def _resolve_config(
    explicit: LyraConfig | Mapping[str, Any] | str | os.PathLike[str] | None,
    weights_path: str,
    embedded: Mapping[str, Any] | None,
) -> tuple[LyraConfig, str]:
    if explicit is not None:
        if isinstance(explicit, LyraConfig):
            return explicit, "explicit LyraConfig argument"
        if isinstance(explicit, Mapping):
            return LyraConfig.from_dict(explicit, source="config argument"), "explicit config dict argument"
        if isinstance(explicit, (str, os.PathLike)):
            cfg_path = os.fspath(explicit)
            return LyraConfig.from_json(cfg_path), f"explicit config file {cfg_path}"
        raise LyraConfigError(
            f"config must be a LyraConfig, a dict or a path to config.json, got {type(explicit).__name__}."
        )

    folder = os.path.dirname(os.path.abspath(weights_path))
    stem = os.path.splitext(os.path.basename(weights_path))[0]
    candidates = [os.path.join(folder, stem + ".json"), os.path.join(folder, "config.json")]
    for cand in dict.fromkeys(candidates):  # de-duplicate, keep order
        if not os.path.isfile(cand):
            continue
        try:
            with open(cand, "r", encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LyraConfigError(
                f"{cand} beside the Lyra weights is not readable JSON ({exc}). Replace it with the config.json "
                f"from AbstractPhil/vae-lyra or remove it."
            ) from exc
        if not _looks_like_lyra_config(data):
            logger.warning("%s has no Lyra settings (%s); ignoring it", cand, ", ".join(_CONFIG_MARKERS))
            continue
        return LyraConfig.from_dict(data, source=cand), f"{cand} beside the weights"

    if embedded is not None and _looks_like_lyra_config(embedded):
        source = f"config embedded in {weights_path}"
        return LyraConfig.from_dict(embedded, source=source), source
    return LyraConfig(), "v1 defaults (no config.json beside the weights, none embedded)"


# --------------------------------------------------------------------------- state
def _short(items: list[str] | tuple[str, ...], limit: int = _LIST_LIMIT) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    more = f", … and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _check_state(
    state: dict[str, torch.Tensor], model: LyraVAE, path: str, config_source: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Drop optional keys, then require the exact key set and shapes of ``model``."""
    dropped = tuple(sorted(k for k in state if k.startswith(OPTIONAL_PREFIXES)))
    if dropped:
        logger.info(
            "%s: ignoring %d unused tensors %s (training-loss only)", path, len(dropped), _short(dropped, 4)
        )
        drop = set(dropped)
        state = {k: v for k, v in state.items() if k not in drop}

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys {_short(unexpected)}")
    if problems:
        raise LyraCheckpointError(
            f"{path} is not a Lyra v1 (AbstractPhil/vae-lyra) state dict: {'; '.join(problems)}. "
            f"Use model.pt from AbstractPhil/vae-lyra for SD1.5, or a published SDXL Lyra (vae-lyra-sdxl-t5xl, "
            f"vae-lyra-xl-adaptive-cantor, …-illustrious) with its config.json for SDXL."
        )

    mismatched = [
        f"{k}: file {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise LyraCheckpointError(
            f"{path}: tensor shapes do not match the config (from {config_source}): {_short(mismatched, 5)}. "
            f"Use the config.json that ships with these weights (vae-lyra: clip 768, t5 768, hidden 1024, latent 768)."
        )

    bad_dtype = sorted(
        k
        for k, v in state.items()
        if v.is_complex() or (expected[k].is_floating_point() and not v.is_floating_point())
    )
    if bad_dtype:
        raise LyraCheckpointError(
            f"{path}: tensors {_short(bad_dtype)} have unusable dtypes; the file is corrupt. {_REDOWNLOAD}"
        )

    nonfinite = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise LyraCheckpointError(
            f"{path}: tensors {_short(nonfinite)} contain NaN or Inf; the weights are corrupt. {_REDOWNLOAD}"
        )

    routes_key = "fusion.modality_routes"
    problem = routes_problem(state[routes_key], len(model.modality_names))
    if problem:
        raise LyraCheckpointError(f"{path}: {problem}. The file is corrupt or from another model. {_REDOWNLOAD}")
    return state, dropped


# --------------------------------------------------------------------------- public
def load_lyra(
    path_or_dir: str | os.PathLike[str],
    config: LyraConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    raw: RawCheckpoint | None = None,
) -> LyraVAE:
    """Load Lyra v1 weights into an eval-mode fp32 :class:`LyraVAE` on ``device`` (``raw``: the file already read
    by :func:`read_checkpoint`, so it is not read again).

    Parameters are frozen (``requires_grad=False``). The stored
    ``fusion.modality_cantor_coords`` / ``fusion.modality_routes`` buffers are
    loaded as-is (authoritative: the author's inference uses them). ``model.load_info`` is a
    :class:`LyraLoadInfo` describing what was read.

    Raises :class:`LyraCheckpointError` (missing / truncated / corrupt file,
    key or shape mismatch), :class:`LyraUnsafeFileError` (pickle that tries to
    run code; refused, nothing executed) or :class:`LyraConfigError`.
    """
    path = resolve_checkpoint_path(path_or_dir)
    raw = raw if raw is not None else read_checkpoint(path)
    cfg, source = _resolve_config(config, path, raw.embedded_config)
    logger.info("Lyra: loading %s (%s) with config from %s", path, raw.format, source)
    if raw.meta:
        logger.info("Lyra: trainer state %s", ", ".join(f"{k}={v}" for k, v in raw.meta.items()))

    model = LyraVAE(cfg)
    state, raw.state = raw.state, {}
    state, dropped = _check_state(state, model, path, source)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # defensive: _check_state should have caught every mismatch
        raise LyraCheckpointError(f"{path}: weights do not fit the Lyra module ({exc}).") from exc
    del state

    fusion = model.fusion
    recomputed = cantor_coordinates(len(model.modality_names))
    if not torch.equal(fusion.modality_cantor_coords.cpu(), recomputed):
        logger.info(
            "Lyra: stored Cantor coords %s differ from recomputed %s; using the stored ones",
            fusion.modality_cantor_coords.tolist(),
            recomputed.tolist(),
        )

    model = model.to(device=device, dtype=torch.float32)
    model.train(False)  # inference mode for dropout/norm layers
    model.requires_grad_(False)
    model.load_info = LyraLoadInfo(
        path=path,
        format=raw.format,
        container=raw.container,
        config_source=source,
        global_step=raw.meta.get("global_step"),
        epoch=raw.meta.get("epoch"),
        best_loss=raw.meta.get("best_loss"),
        dropped_keys=dropped,
    )
    return model

