"""Typed errors of the Lune library. Every message names the problem, the file, and what to do instead.

They subclass ValueError so ComfyUI reports them as a node's execution error and keeps serving.
"""


class LuneError(ValueError):
    """Base class of every error the pack raises on purpose."""


class LuneFormatError(LuneError):
    """The file is corrupt, truncated, empty, or in a layout we cannot read."""


class UnsupportedModelError(LuneError):
    """The file holds a model of another architecture (SDXL, SD2, SD3, Flux, inpainting…)."""


class UnsafeCheckpointError(LuneError):
    """A pickle that would run code or build objects beyond plain tensors; refused, nothing was executed."""


class MissingComponentError(LuneError):
    """A companion part (CLIP, VAE, config, the file itself) is missing."""


class LuneBugError(LuneError):
    """A programming error inside the pack (not the user's input, file or network); the message asks for a report."""
