"""Configuration of the Lyra v1 VAE (docs/reference.md §3: the published ``config.json``).

The published ``AbstractPhil/vae-lyra`` ``config.json`` is the *trainer* config:
it carries many keys that do not affect the network (batch size, learning
rate, ...). :meth:`LyraConfig.from_dict` reads the architecture keys, ignores
the rest, and validates what it reads.

Defaults (docs/reference.md §3)::

    modality_dims   {"clip": 768, "t5": 768}   (order = modality index)
    latent_dim      768
    hidden_dim      1024
    encoder_layers  3
    decoder_layers  3
    fusion_strategy "cantor"
    fusion_heads    8        (head_dim = hidden_dim / fusion_heads = 128)
    fusion_dropout  0.1
    dropout         0.1
    seq_len         77       (token count the author feeds; the net is per-token)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Mapping

from .errors import LyraConfigError

logger = logging.getLogger("lune.lyra")

__all__ = ["LyraConfig", "PUBLISHED_FILES", "PUBLISHED_REPO", "SUPPORTED_MODALITIES", "SUPPORTED_FUSION"]

#: Modalities of the published v1 model. Their order in ``modality_dims``
#: decides the row of ``fusion.modality_embeddings`` each one uses.
SUPPORTED_MODALITIES = ("clip", "t5")
#: The only fusion strategy whose weights layout this library implements.
SUPPORTED_FUSION = "cantor"
#: Where the published v1 weights live (huggingface.co/AbstractPhil/vae-lyra) and the files a loader needs there.
PUBLISHED_REPO = "AbstractPhil/vae-lyra"
PUBLISHED_FILES = ("config.json", "model.pt")

_HINT = "Use the config.json that ships with AbstractPhil/vae-lyra (or pass no config to use the defaults)."

_INT_FIELDS = ("latent_dim", "hidden_dim", "encoder_layers", "decoder_layers", "fusion_heads", "seq_len")
_FLOAT_FIELDS = ("fusion_dropout", "dropout")


def _default_modality_dims() -> dict[str, int]:
    return {"clip": 768, "t5": 768}


class FusionShape:
    """What every Lyra's fusion derives from ``modality_dims``, ``hidden_dim`` and ``fusion_heads``."""

    modality_dims: Mapping[str, int]
    hidden_dim: int
    fusion_heads: int

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in index order (row order of ``modality_embeddings``)."""
        return tuple(self.modality_dims)

    @property
    def head_dim(self) -> int:
        """``hidden_dim / fusion_heads`` (128 for v1)."""
        return self.hidden_dim // self.fusion_heads


@dataclasses.dataclass(frozen=True)
class LyraConfig(FusionShape):
    """Architecture hyper-parameters of Lyra v1 (docs/reference.md §3).

    Construct directly (validated in ``__post_init__``), or with
    :meth:`from_dict` / :meth:`from_json` which also ignore unknown trainer keys.
    """

    modality_dims: dict[str, int] = dataclasses.field(default_factory=_default_modality_dims, hash=False)
    latent_dim: int = 768
    hidden_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    fusion_strategy: str = "cantor"
    fusion_heads: int = 8
    fusion_dropout: float = 0.1
    dropout: float = 0.1
    seq_len: int = 77

    def __post_init__(self) -> None:
        self._validate(source="LyraConfig")

    # ------------------------------------------------------------------ build
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "LyraConfig":
        """Build a config from a (trainer) dict.

        Keys that are not fields of :class:`LyraConfig` are ignored (logged at
        DEBUG); missing keys take the docs/reference.md §3 defaults. ``source`` names where
        the dict came from and is quoted in error messages.
        """
        if not isinstance(d, Mapping):
            raise LyraConfigError(
                f"{source}: expected a JSON object / dict of settings, got {type(d).__name__}. {_HINT}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: d[k] for k in names if k in d}
        ignored = sorted(str(k) for k in d if k not in names)
        if ignored:
            logger.debug("%s: ignoring %d non-architecture keys: %s", source, len(ignored), ", ".join(ignored))
        if "modality_dims" in kwargs and isinstance(kwargs["modality_dims"], Mapping):
            kwargs["modality_dims"] = dict(kwargs["modality_dims"])
        # Build without __post_init__ so that validation errors quote ``source``.
        obj = object.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            object.__setattr__(obj, f.name, value)
        obj._validate(source=source)
        return obj

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "LyraConfig":
        """Read ``config.json`` (the trainer config) and validate it."""
        path = os.fspath(path)
        try:
            with open(path, "r", encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise LyraConfigError(f"Lyra config not found: {path}. {_HINT}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LyraConfigError(f"Lyra config {path} is not readable JSON ({exc}). {_HINT}") from exc
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the architecture keys (round-trips through from_dict)."""
        d = dataclasses.asdict(self)
        d["modality_dims"] = dict(self.modality_dims)
        return d

    # ------------------------------------------------------------- validate
    def _validate(self, source: str) -> None:
        problem = self._fusion_problem() or self._modality_problem() or self._number_problem()
        if problem:
            raise LyraConfigError(f"{source}: {problem} {_HINT}")

    def _fusion_problem(self) -> str | None:
        fs = self.fusion_strategy
        if fs == SUPPORTED_FUSION:
            return None
        extra = ""
        if isinstance(fs, str) and "adaptive" in fs:
            extra = " 'adaptive_cantor' is the v2 SDXL Lyra, a different network that this pack does not load."
        return (f"fusion_strategy is {fs!r} but this encoder supports only 'cantor' "
                f"(the published AbstractPhil/vae-lyra v1).{extra}")

    def _modality_problem(self) -> str | None:
        md = self.modality_dims
        if not isinstance(md, Mapping) or not md:
            return f"modality_dims must be a non-empty mapping of name -> width, got {md!r}."
        for name, dim in md.items():
            if not isinstance(name, str) or not name or "." in name:
                return f"modality name {name!r} is not a valid module name (non-empty text, no '.')."
            if not _is_pos_int(dim):
                return f"modality_dims[{name!r}] must be a positive integer, got {dim!r}."
        if set(md) != set(SUPPORTED_MODALITIES) or len(md) != len(SUPPORTED_MODALITIES):
            return (f"modality_dims has modalities {list(md)}; Lyra v1 has exactly {list(SUPPORTED_MODALITIES)} "
                    f"(SD1.5 CLIP-L and t5-base). Other Lyra variants (e.g. SDXL clip_l/clip_g/t5_xl) are not "
                    f"supported.")
        return None

    def _number_problem(self) -> str | None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not _is_pos_int(value):
                return f"{name} must be a positive integer, got {value!r}."
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
                return f"{name} must be a number in [0, 1), got {value!r}."
            if not math.isfinite(value):
                return f"{name} must be finite, got {value!r}."
        if self.hidden_dim % self.fusion_heads != 0:
            return (f"hidden_dim {self.hidden_dim} is not divisible by fusion_heads {self.fusion_heads}; "
                    f"each attention head needs hidden_dim / fusion_heads channels (v1: 1024 / 8 = 128).")
        return None


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
