"""Merge inputs read one tensor at a time, and the checks that run before anything is written.

``.safetensors`` files are opened with ``safetensors.safe_open`` for each key and closed right after, so the
pages of a 2 GB checkpoint never stay mapped: resident memory stays at the tensors being combined, whatever the
number of models. ``.pt``/``.ckpt``/``.bin`` files go through the pack's weights-only reader
(``lune.safe_read.load_pickle``: code-running pickles are refused, zip files are memory-mapped); their state
dict is the top-level tensor dict or the one under ``"state_dict"`` (the classic ``.ckpt`` shape).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ..errors import LuneFormatError, MissingComponentError, UnsupportedModelError
from ..safe_read import SAFETENSORS, is_tensor_dict, load_pickle, read_safetensors_header, sniff

log = logging.getLogger("lune")

# safetensors dtype names (the format's header strings) and their torch dtypes.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
TORCH_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=self.dtype).element_size()


class ModelSource:
    """One merge input: its tensor names, dtypes and shapes, and ``read(key)`` for one tensor."""

    path: str
    name: str
    info: dict[str, TensorInfo]

    def read(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the source keeps between reads (nothing for safetensors)."""


class SafetensorsSource(ModelSource):
    def __init__(self, path: str) -> None:
        self.path, self.name = path, os.path.basename(path)
        header = read_safetensors_header(path)  # validates offsets: a truncated download fails here
        self.info = {}
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise LuneFormatError(f"{path}: tensor {key!r} has dtype {entry.get('dtype')!r}, which the merge "
                                      "cannot read. Convert the file to fp16/bf16/fp32 first.")
            self.info[key] = TensorInfo(dtype, tuple(entry["shape"]))

    def read(self, key: str) -> torch.Tensor:
        import safetensors

        try:
            with safetensors.safe_open(self.path, framework="pt", device="cpu") as f:
                # clone: the tensor must not keep the file mapped once the handle is closed
                return f.get_tensor(key).clone()
        except Exception as e:  # safetensors raises its own SafetensorError for a damaged file
            raise LuneFormatError(f"{self.path}: could not read tensor {key!r} ({e}). The file changed or is "
                                  "damaged; download it again.") from None


class PickleSource(ModelSource):
    """A weights-only loaded ``.pt``: the dict stays memory-mapped while the merge runs (zip checkpoints)."""

    def __init__(self, path: str, kind: str) -> None:
        self.path, self.name = path, os.path.basename(path)
        obj = load_pickle(path, kind)
        if isinstance(obj, dict) and is_tensor_dict(obj.get("state_dict")):
            obj = obj["state_dict"]
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
        if not tensors:
            raise LuneFormatError(f"{path} holds no state dict of tensors at its top level or under 'state_dict' "
                                  "(a training state with optimizer entries?). Convert it with Lune Convert to "
                                  "Safetensors, or save the weights as a plain state dict, then merge that file.")
        self._tensors = tensors
        self.info = {k: TensorInfo(v.dtype, tuple(v.shape)) for k, v in tensors.items()}

    def read(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def close(self) -> None:
        self._tensors = {}


def open_source(path: str) -> ModelSource:
    """Open a merge input by content (magic bytes), not by extension."""
    if not os.path.isfile(path):
        raise MissingComponentError(f"{path} does not exist (or is not a file). Check the name and the folder.")
    kind = sniff(path)
    if kind == SAFETENSORS:
        return SafetensorsSource(path)
    return PickleSource(path, kind)


def check_compatible(base: ModelSource, model: ModelSource) -> list[str]:
    """Keys of ``base`` that ``model`` also holds (merged); raise on the first key or shape that does not fit.

    A model may lack base keys (a UNet-only file against a full checkpoint: those keys are copied from the
    base), but every key it has must exist in the base with the same shape — otherwise it is another
    architecture or another key layout.
    """
    extra = sorted(set(model.info) - set(base.info))
    if extra:
        raise UnsupportedModelError(
            f"{model.name} does not match the base {base.name}: it has key {extra[0]!r} (and {len(extra) - 1} more) "
            "that the base lacks. Merge only models of the same architecture and key layout (e.g. all SD1.5 "
            "single-file checkpoints).")
    for key in sorted(model.info):
        if model.info[key].shape != base.info[key].shape:
            raise UnsupportedModelError(
                f"{model.name} does not match the base {base.name}: {key!r} has shape "
                f"{list(model.info[key].shape)} there but {list(base.info[key].shape)} in the base. Merge only "
                "models of the same architecture.")
    shared = [k for k in base.info if k in model.info]
    if not shared:
        raise UnsupportedModelError(f"{model.name} shares no tensor with the base {base.name}; nothing to merge. "
                                    "Pick models of the same architecture and key layout.")
    return shared
