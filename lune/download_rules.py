"""Which files of a Hugging Face repository a ``[download]`` entry fetches: a fixed list, or a rule applied to the
repository's file listing (``lune.hub.repo_files``) when the published file names are not fixed.

Rules (each returns the files to fetch, the one to load first, or raises MissingComponentError naming the repo and
what was looked for):
  * ``fixed``: the entry's own list (lune's training state, lune-flux's UNet, Lyra's model.pt + config.json).
  * ``newest_epoch``: the training state (``.pt``/``.pth``/``.ckpt``) of the highest epoch, then step, named in its
    path as ``e<N>``/``epoch<N>`` and ``s<N>``/``step<N>`` (the Lune trainer's ``sd15_flow_lune_e52_s52000.pt``;
    Sol's author publishes one training state per epoch).
  * ``diffusers_unet``: the ``unet/`` folder of a diffusers pipeline repository in whatever weight format it holds,
    ``diffusion_pytorch_model.safetensors`` first (then ``.fp16.safetensors``, then ``.bin``, which the loader reads
    with ``torch.load(weights_only=True)``), plus ``unet/config.json`` when listed.
  * ``single_file``: the one single-file checkpoint at the top of the repository (``.safetensors`` preferred over
    ``.ckpt``); several candidates resolve to the one named like the repository, else the error lists them.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Sequence

from .errors import MissingComponentError

FIXED = "fixed"
NEWEST_EPOCH = "newest_epoch"
DIFFUSERS_UNET = "diffusers_unet"
SINGLE_FILE = "single_file"
RULES = (FIXED, NEWEST_EPOCH, DIFFUSERS_UNET, SINGLE_FILE)

TRAINING_STATE_SUFFIXES = (".pt", ".pth", ".ckpt")
# Preference order inside unet/ (diffusers' names; lune.formats.DIFFUSERS_WEIGHT_NAMES reads the same three).
UNET_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_EPOCH = re.compile(r"(?:^|[^a-z0-9])(?:epoch|ep|e)[_-]?(\d+)(?![0-9])")
_STEP = re.compile(r"(?:^|[^a-z0-9])(?:step|s)[_-]?(\d+)(?![0-9])")


@dataclass(frozen=True)
class DownloadEntry:
    """One ``[download]`` entry of a loader list."""
    repo: str
    folder: str                     # ComfyUI model folder the files go under (models/<folder>/<owner>_<name>/)
    rule: str = FIXED
    files: tuple[str, ...] = ()     # FIXED only, the file to load first
    variant: str | None = None      # Lune variant the entry implies (Load Lune Model's auto)
    licence: str | None = None      # shown in the label and logged before a download when not a permissive licence
    what: str = ""                  # what the rule looks for, for messages

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown download rule {self.rule!r}")
        if (self.rule == FIXED) != bool(self.files):
            raise ValueError(f"{self.repo}: a fixed entry lists its files, a rule entry lists none")

    @property
    def label(self) -> str:
        """The list entry: ``[download] owner/name``, with the licence when there is one to state."""
        base = f"[download] {self.repo}"
        return f"{base} ({self.licence})" if self.licence else base

    def resolve(self, listing: Sequence[str]) -> list[str]:
        """The files to fetch, the one to load first (see the module doc)."""
        if self.rule == FIXED:
            return list(self.files)
        return RESOLVERS[self.rule](self.repo, list(listing))


def _nothing(repo: str, listing: list[str], looked_for: str) -> MissingComponentError:
    shown = ", ".join(listing[:12]) + (" …" if len(listing) > 12 else "") if listing else "no files"
    return MissingComponentError(
        f"{repo} has no {looked_for} (it lists {shown}). The repository changed or could not be listed: place the "
        "file in the model folder yourself and pick it instead of the [download] entry.")


def _number(pattern: re.Pattern, text: str) -> int:
    found = pattern.findall(text)
    return int(found[-1]) if found else -1


def newest_epoch(repo: str, listing: list[str]) -> list[str]:
    states = [f for f in listing if f.lower().endswith(TRAINING_STATE_SUFFIXES)
              and _number(_EPOCH, f.lower()) >= 0]
    if not states:
        raise _nothing(repo, listing, "training state named by epoch (…_e<N>….pt)")
    return [max(states, key=lambda f: (_number(_EPOCH, f.lower()), _number(_STEP, f.lower()), f))]


def diffusers_unet(repo: str, listing: list[str]) -> list[str]:
    files = set(listing)
    for name in UNET_WEIGHT_NAMES:
        if f"unet/{name}" in files:
            return [f"unet/{name}"] + (["unet/config.json"] if "unet/config.json" in files else [])
    raise _nothing(repo, listing, f"diffusers UNet (unet/{' or unet/'.join(UNET_WEIGHT_NAMES)})")


def single_file(repo: str, listing: list[str]) -> list[str]:
    for suffix in SINGLE_FILE_SUFFIXES:
        top = sorted(f for f in listing if "/" not in f and f.lower().endswith(suffix))
        if len(top) == 1:
            return top
        named = [f for f in top if posixpath.splitext(f)[0].lower() == repo.split("/")[-1].lower()]
        if len(named) == 1:
            return named
        if top:
            raise MissingComponentError(
                f"{repo} holds several single-file checkpoints ({', '.join(top)}): download the one you want into "
                "models/checkpoints yourself and pick it instead of the [download] entry.")
    raise _nothing(repo, listing, "single-file checkpoint (.safetensors or .ckpt at the top of the repository)")


RESOLVERS = {NEWEST_EPOCH: newest_epoch, DIFFUSERS_UNET: diffusers_unet, SINGLE_FILE: single_file}
