"""Safe reading of weight files, shared by the ``lune`` and ``lyra`` libraries.

* Content sniffing, never the extension alone: a torch zip pickle starts with the zip magic ``PK\\x03\\x04``, a
  legacy torch pickle with the pickle protocol opcode ``0x80``, a safetensors file with an 8-byte little-endian
  header length followed by the JSON header ``{`` (safetensors format description, huggingface/safetensors
  README "Format"). A file whose extension says otherwise is read as what it is, with a warning.
* safetensors: the header is validated against the file size before any tensor is touched — every entry needs a
  ``dtype``, an integer ``shape`` and ``data_offsets`` ``[begin, end]`` inside the data block whose length is
  ``prod(shape) · itemsize`` — so an interrupted download is named as truncated, not as a crash.
* Pickles: ``torch.load(weights_only=True)`` only (anything but tensors and plain containers is refused before
  it can run), ``map_location="cpu"`` because trainers save CUDA-tagged storages, and ``mmap=True`` for zip
  pickles so a 10 GB training state costs only the pages of the tensors used. A pickle named ``.safetensors`` is
  passed to ``torch.load`` as an open file (``torch.load`` hands any *path* ending in ``.safetensors`` to
  safetensors), which torch cannot memory-map: it is read fully. No symlink, no copy.
* Wrapper prefixes added by ``DistributedDataParallel`` (``module.``), ``torch.compile`` (``_orig_mod.``) and
  some trainers (``unet.``) are stripped; trainer dicts are searched for their weights container.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .errors import LuneFormatError, UnsafeCheckpointError

log = logging.getLogger("lune")

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"
FORMAT_NAMES = {SAFETENSORS: "safetensors file", TORCH_ZIP: "PyTorch pickle", TORCH_LEGACY: "PyTorch pickle"}
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "unet.")
DOWNLOAD_AGAIN = "Download it again."
UNSAFE_FIX = ("Use a .safetensors copy from a trusted source, or re-save the weights as a plain state dict "
              "in a trusted environment.")

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_MAX_HEADER = 100 * 1024 * 1024
# Bytes per element of the byte-sized dtypes of the safetensors format (newer sub-byte ones are left to safetensors).
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass
class WeightsFile:
    """What one file holds: ``content`` is the tensor dict (safetensors) or the unpickled object (pickles)."""
    path: str
    format: str
    content: Any
    metadata: dict[str, str] = field(default_factory=dict)


def sniff(path: str, advice: str = DOWNLOAD_AGAIN) -> str:
    """``safetensors`` | ``torch-zip`` | ``torch-legacy`` from the first bytes; LuneFormatError otherwise."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as e:
        raise LuneFormatError(f"Cannot read {path}: {e}.") from None
    if size == 0:
        raise LuneFormatError(f"{path} is empty (0 bytes): the download or copy did not finish. {advice}")
    if head.startswith(_ZIP_MAGIC):
        return TORCH_ZIP
    if head[8:9] == b"{":  # checked before the pickle opcode: a header length can start with the byte 0x80
        return SAFETENSORS
    if head[0] == _PICKLE_PROTO:
        return TORCH_LEGACY
    raise LuneFormatError(f"{path} is not a checkpoint format Lune can read: neither a safetensors file nor a PyTorch "
                          f"checkpoint (first bytes {head[:8]!r}). It may be an HTML error page or a partial "
                          f"download. {advice}")


def _entry_problem(name: str, entry: Any) -> str | None:
    """Why one safetensors header entry is malformed, or None."""
    if not isinstance(entry, dict):
        return f"entry {name!r} is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or not dtype:
        return f"tensor {name!r} has no valid dtype ({dtype!r})"
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        return f"tensor {name!r} has an invalid shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"tensor {name!r} has no valid data_offsets ({offsets!r})"
    if dtype in _ITEMSIZE and offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
        return f"tensor {name!r} ({dtype} {shape}) does not match its data_offsets {offsets}"
    return None


def read_safetensors_header(path: str, advice: str = DOWNLOAD_AGAIN) -> dict:
    """Parse and validate the header (``u64`` length N, N bytes of JSON, then the data block); returns it."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else size
        if n > _MAX_HEADER or 8 + n > size:
            raise LuneFormatError(f"{path} could not be read as safetensors: truncated safetensors header (header "
                                  f"length {n}, file {size} bytes). {advice}")
        try:
            header = json.loads(handle.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LuneFormatError(f"{path} could not be read as safetensors: the header is not valid JSON ({e}); "
                                  f"the file is corrupt. {advice}") from None
    if not isinstance(header, dict):
        raise LuneFormatError(f"{path} could not be read as safetensors: the header is not a JSON object; the file "
                              f"is corrupt. {advice}")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    problem = next((p for p in (_entry_problem(k, v) for k, v in tensors.items()) if p), None)
    if not isinstance(header.get("__metadata__", {}), dict):
        problem = "__metadata__ is not an object"
    if problem:
        raise LuneFormatError(f"{path} could not be read as safetensors: its header is malformed ({problem}). The "
                              f"file is corrupt or was written by a broken tool. {advice}")
    data_len = size - 8 - n
    need = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if need > data_len:
        raise LuneFormatError(f"{path} could not be read as safetensors: the file is truncated: its header describes "
                              f"{need:,} bytes of tensors but only {data_len:,} are present "
                              f"({100 * data_len / max(need, 1):.1f}%). {advice}")
    return header


def read_safetensors(path: str, advice: str = DOWNLOAD_AGAIN, keep: Callable[[str], bool] | None = None,
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (CPU, stored dtype) whose key ``keep`` accepts (all when None) and the ``__metadata__`` strings,
    after header validation. Tensors left out are never read."""
    import safetensors

    header = read_safetensors_header(path, advice)
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys() if keep is None or keep(k)}
    except Exception as e:  # safetensors raises its own SafetensorError for any structural problem
        raise LuneFormatError(f"{path} could not be read as safetensors; it looks truncated or corrupt ({e}). "
                              f"{advice}") from None
    return tensors, dict(header.get("__metadata__") or {})


def _refusal(error: Exception) -> str:
    """Why a weights-only load refused the pickle, naming the callable (e.g. ``posix.system``) — leaving out
    torch's advice to retry the load unsafely, the one thing a user must not do with an untrusted file."""
    text = str(error)
    match = re.search(r"GLOBAL\s+([\w.]+)", text)
    if match:
        return f"its pickle would run code, not just load tensors (it would import and call {match.group(1)})"
    detail = next((line.strip() for line in text.splitlines() if "nsupported" in line), "") or type(error).__name__
    return (f"its pickle uses instructions a weights-only load does not allow ({detail[:200]}); it may try to run "
            "code, or it is corrupt")


def load_pickle(path: str, fmt: str, advice: str = DOWNLOAD_AGAIN) -> Any:
    """``torch.load(weights_only=True, map_location="cpu")``, memory-mapped for zip pickles with a usable name."""
    misnamed = path.lower().endswith(SAFETENSORS_SUFFIXES)
    mmap = fmt == TORCH_ZIP and not misnamed
    try:
        if misnamed:
            with open(path, "rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True, mmap=False)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{path} was refused: {_refusal(e)}. Nothing from the file was executed. "
                                    f"{UNSAFE_FIX}") from None
    except Exception as e:  # truncated/corrupt: torch raises RuntimeError, EOFError, IndexError, BadZipFile, ...
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise LuneFormatError(f"{path} could not be read as a PyTorch checkpoint; it looks truncated or corrupt "
                              f"({type(e).__name__}: {reason}). {advice}") from None


def read_weights_file(path: str, advice: str = DOWNLOAD_AGAIN) -> WeightsFile:
    """Sniff ``path`` and read it safely: safetensors → tensor dict + metadata, pickle → the unpickled object."""
    fmt = sniff(path, advice)
    is_safetensors_name = path.lower().endswith(SAFETENSORS_SUFFIXES)
    if (fmt == SAFETENSORS) != is_safetensors_name:
        ext = os.path.splitext(path)[1] or "(none)"
        log.warning("%s is really a %s despite the %r extension; reading it safely as such",
                    path, FORMAT_NAMES[fmt], ext)
    if fmt == SAFETENSORS:
        tensors, metadata = read_safetensors(path, advice)
        return WeightsFile(path, fmt, tensors, metadata)
    return WeightsFile(path, fmt, load_pickle(path, fmt, advice))


def is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj: Any, path: str, containers: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], str] | None:
    """(tensors, where) from a plain state dict (where = ``"bare"``) or the first of ``containers`` in a trainer
    dict that holds one; None when no container does. LuneFormatError when ``obj`` is not a dict at all."""
    if not isinstance(obj, Mapping):
        raise LuneFormatError(f"{path} holds a {type(obj).__name__}, not a state dict or a trainer checkpoint "
                              "dict. Pick the file that holds the model weights.")
    if is_tensor_dict(obj):
        return dict(obj), "bare"
    for key in containers:
        if is_tensor_dict(obj.get(key)):
            return dict(obj[key]), key
    return None


def strip_wrappers(key: str) -> str:
    """``key`` without ``module.``, ``_orig_mod.`` and ``unet.`` at its start, in any order and repetition."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every key through ``strip_wrappers``."""
    return {strip_wrappers(key): value for key, value in state.items()}
