"""Domain exceptions for the Lyra library (AbstractPhil/vae-lyra).

Every message names the problem *and* the fix, so the node layer can show it
to the user unchanged. All exceptions derive from :class:`LyraError`, itself a
:class:`lune.errors.LuneError` (a ``ValueError``): the pack has one error root.
"""

from __future__ import annotations

from ..lune import errors as _lune_errors

__all__ = [
    "LyraError",
    "LyraConfigError",
    "LyraCheckpointError",
    "LyraUnsafeFileError",
    "LyraInputError",
]


class LyraError(_lune_errors.LuneError):
    """Base class of every error raised by :mod:`lyra`."""


class LyraConfigError(LyraError):
    """The Lyra configuration is invalid or describes an unsupported model.

    Example: ``fusion_strategy`` other than ``"cantor"``, ``hidden_dim`` not
    divisible by ``fusion_heads``, non-positive sizes, unknown modality names.
    """


class LyraCheckpointError(LyraError):
    """A checkpoint file cannot be used: missing, truncated, corrupt, or its
    tensors do not match the expected Lyra v1 layout (missing/unexpected keys,
    shape mismatches)."""


class LyraUnsafeFileError(LyraCheckpointError, _lune_errors.UnsafeCheckpointError):
    """A pickle checkpoint asked to import or call something outside plain
    tensors/containers. ``torch.load(weights_only=True)`` refused it; nothing
    from the file was executed."""


class LyraInputError(LyraError):
    """Features given to the model have the wrong modalities or shapes
    (e.g. 4096-wide T5-XXL features instead of 768-wide t5-base)."""
