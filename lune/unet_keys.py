"""SD1.5 UNet key layouts: diffusers ``UNet2DConditionModel`` <-> LDM / ComfyUI ``UNetModel``.

The same SD1.5 UNet weights circulate under two naming schemes. Lune's diffusers folders, training-state
``.pt`` files and the bare ``tinyflux-experts`` UNet use diffusers names; single-file checkpoints and ComfyUI
use the CompVis LDM names (``model.diffusion_model.`` + the names below). Correspondence, module by module:

=========================================  ==============================================================
diffusers                                  LDM / ComfyUI
=========================================  ==============================================================
conv_in                                    input_blocks.0.0
time_embedding.linear_1 / linear_2         time_embed.0 / time_embed.2
down_blocks.L.resnets.I                    input_blocks.N.0   (N counts 1, 2, ... through every level,
down_blocks.L.attentions.I                 input_blocks.N.1    one block per resnet, then one for the
down_blocks.L.downsamplers.0.conv          input_blocks.N.0.op  level's downsampler)
mid_block.resnets.0 / attentions.0 /       middle_block.0 / middle_block.1 / middle_block.2
mid_block.resnets.1
up_blocks.J.resnets.I                      output_blocks.M.0  (J and M both run deepest level first;
up_blocks.J.attentions.I                   output_blocks.M.1   the upsampler sits at .2 when the block
up_blocks.J.upsamplers.0.conv              output_blocks.M.1.conv or .M.2.conv  has an attention, else .1)
conv_norm_out / conv_out                   out.0 / out.2
-----------------------------------------  --------------------------------------------------------------
inside a resnet                            norm1 -> in_layers.0, conv1 -> in_layers.2,
                                           time_emb_proj -> emb_layers.1, norm2 -> out_layers.0,
                                           conv2 -> out_layers.3, conv_shortcut -> skip_connection
inside an attention                        identical names: norm, proj_in, proj_out,
(Transformer2DModel <-> SpatialTransformer) transformer_blocks.T.{norm1,norm2,norm3,attn1.to_{q,k,v},
                                           attn1.to_out.0, attn2.*, ff.net.0.proj, ff.net.2}
=========================================  ==============================================================

Every leaf module carries ``weight`` and/or ``bias``; shapes are identical in both layouts (SD1.5's
``proj_in``/``proj_out`` are 1x1 convolutions in both), so conversion only renames keys.

Source: the module names of diffusers' ``UNet2DConditionModel`` and of the LDM ``openaimodel.UNetModel`` that
ComfyUI keeps; ComfyUI 0.3.75 ``comfy.utils.unet_to_diffusers`` encodes the same correspondence, and
``tests/unit/test_unet_keys.py`` checks this module against it key for key on full-size SD1.5.

ComfyUI only converts diffusers UNets whose shape is in a hard-coded list of full-size models. Here the block
structure (levels, resnets per level, which resnets carry an attention and how deep it is, middle block or
none) is read from the keys themselves, so reduced layouts (e.g. the one-level test UNet) convert too. Both
directions come from one function, :func:`module_pairs`, which turns a :class:`UnetLayout` into the list of
(diffusers module, LDM module) pairs.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .errors import LuneFormatError, UnsupportedModelError

log = logging.getLogger("lune.unet_keys")

__all__ = [
    "UnetLayout", "SD15_LAYOUT", "module_pairs",
    "layout_from_diffusers_keys", "layout_from_ldm_keys",
    "diffusers_to_ldm_keys", "ldm_to_diffusers_keys",
    "diffusers_to_ldm", "ldm_to_diffusers",
    "check_diffusers_config", "is_diffusers_unet", "is_ldm_unet",
]

_PARAMS = ("weight", "bias")

# (diffusers leaf, LDM leaf) inside one resnet block.
_RESNET_LEAVES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
# Leaves of a spatial transformer (same name in both layouts).
_ATTENTION_LEAVES = ("norm", "proj_in", "proj_out")
_TRANSFORMER_BLOCK_LEAVES = (
    "norm1", "norm2", "norm3",
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2",
)
# Diffusers keys that no SD1.5 UNet has and that name another architecture.
_FOREIGN_DIFFUSERS_PREFIXES = (
    ("add_embedding.", "an SDXL UNet (size/crop conditioning 'add_embedding')"),
    ("class_embedding.", "a class-conditioned UNet (unCLIP / x4 upscaler, 'class_embedding')"),
    ("encoder_hid_proj.", "a UNet with an image/text projection ('encoder_hid_proj', e.g. Kandinsky/IP)"),
)


@dataclass(frozen=True)
class UnetLayout:
    """Block structure of an SD-style UNet, independent of naming.

    ``down[l][i]``: transformer depth of the attention after resnet ``i`` of down level ``l`` (0 = no attention).
    ``up[j][i]``: the same for up block ``j`` in diffusers order (``j = 0`` is the deepest level).
    ``mid``: ``None`` = no middle block; ``-1`` = one resnet only (LDM ``middle_block.0``);
    ``d >= 1`` = resnet, attention of depth ``d``, resnet (SD1.5: 1).

    Every down level but the last ends with a downsampler, every up block but the last with an upsampler, and
    up block ``j`` has one resnet more than down level ``L-1-j`` (the LDM UNet, hence ComfyUI, builds only that).
    """

    down: tuple[tuple[int, ...], ...]
    up: tuple[tuple[int, ...], ...]
    mid: int | None

    @property
    def num_levels(self) -> int:
        return len(self.down)

    def validate(self, source: str = "the UNet") -> None:
        """Raise LuneFormatError when the structure is not one the LDM UNet can express."""
        problems = []
        levels = len(self.down)
        if levels == 0:
            problems.append("no down blocks")
        if any(len(d) == 0 for d in self.down):
            problems.append("a down level without resnets")
        if len(self.up) != levels:
            problems.append(f"{levels} down levels but {len(self.up)} up levels")
        else:
            for j, depths in enumerate(self.up):
                expect = len(self.down[levels - 1 - j]) + 1
                if len(depths) != expect:
                    problems.append(f"up block {j} has {len(depths)} resnets, expected {expect} "
                                    f"(one more than down level {levels - 1 - j})")
        if self.mid is not None and self.mid < -1:
            problems.append(f"invalid middle-block depth {self.mid}")
        if problems:
            raise LuneFormatError(f"{source} does not have a UNet block structure ComfyUI can build: "
                                  f"{'; '.join(problems)}. The file is incomplete or not an SD-style UNet.")


#: Stock SD1.5: 4 levels of 2 resnets, attention (depth 1) on levels 0-2, middle block with attention.
SD15_LAYOUT = UnetLayout(down=((1, 1), (1, 1), (1, 1), (0, 0)),
                         up=((0, 0, 0), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
                         mid=1)


# ---------------------------------------------------------------------------------------------- the one mapping

def _resnet_pairs(diffusers: str, ldm: str) -> list[tuple[str, str]]:
    return [(f"{diffusers}.{d}", f"{ldm}.{l}") for d, l in _RESNET_LEAVES]


def _attention_pairs(diffusers: str, ldm: str, depth: int) -> list[tuple[str, str]]:
    leaves = list(_ATTENTION_LEAVES)
    leaves += [f"transformer_blocks.{t}.{leaf}" for t in range(depth) for leaf in _TRANSFORMER_BLOCK_LEAVES]
    return [(f"{diffusers}.{leaf}", f"{ldm}.{leaf}") for leaf in leaves]


def module_pairs(layout: UnetLayout) -> list[tuple[str, str]]:
    """Every (diffusers module, LDM module) pair of ``layout``; a key is ``<module>.weight`` or ``<module>.bias``.

    The list covers all modules the layout can hold (``conv_shortcut``/``skip_connection`` for every resnet,
    whether or not the channel count changes); a state dict holds a subset. It is a bijection.
    """
    levels = layout.num_levels
    pairs = [("conv_in", "input_blocks.0.0"),
             ("time_embedding.linear_1", "time_embed.0"),
             ("time_embedding.linear_2", "time_embed.2")]
    n = 1
    for level, depths in enumerate(layout.down):
        for i, depth in enumerate(depths):
            pairs += _resnet_pairs(f"down_blocks.{level}.resnets.{i}", f"input_blocks.{n}.0")
            if depth > 0:
                pairs += _attention_pairs(f"down_blocks.{level}.attentions.{i}", f"input_blocks.{n}.1", depth)
            n += 1
        if level < levels - 1:
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{n}.0.op"))
            n += 1
    if layout.mid is not None:
        pairs += _resnet_pairs("mid_block.resnets.0", "middle_block.0")
        if layout.mid >= 0:
            pairs += _attention_pairs("mid_block.attentions.0", "middle_block.1", layout.mid)
            pairs += _resnet_pairs("mid_block.resnets.1", "middle_block.2")
    m = 0
    for j, depths in enumerate(layout.up):
        for i, depth in enumerate(depths):
            pairs += _resnet_pairs(f"up_blocks.{j}.resnets.{i}", f"output_blocks.{m}.0")
            if depth > 0:
                pairs += _attention_pairs(f"up_blocks.{j}.attentions.{i}", f"output_blocks.{m}.1", depth)
            if j < levels - 1 and i == len(depths) - 1:
                slot = 2 if depth > 0 else 1
                pairs.append((f"up_blocks.{j}.upsamplers.0.conv", f"output_blocks.{m}.{slot}.conv"))
            m += 1
    pairs += [("conv_norm_out", "out.0"), ("conv_out", "out.2")]
    return pairs


# ------------------------------------------------------------------------------------- structure from key names

_DIFF_RESNET = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.resnets\.(\d+)\.")
_DIFF_ATTN = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(?:transformer_blocks\.(\d+)\.)?")
_DIFF_MID_RESNET = re.compile(r"^mid_block\.resnets\.(\d+)\.")
_DIFF_MID_ATTN = re.compile(r"^mid_block\.attentions\.(\d+)\.(?:transformer_blocks\.(\d+)\.)?")

_LDM_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.*)$")
_LDM_MID = re.compile(r"^middle_block\.(\d+)\.(?:transformer_blocks\.(\d+)\.)?")
_LDM_DEPTH = re.compile(r"^transformer_blocks\.(\d+)\.")


def _contiguous(indices: Iterable[int], what: str, source: str) -> int:
    """Return ``max + 1`` after checking that ``indices`` are exactly 0..max."""
    found = sorted(set(indices))
    if found != list(range(len(found))):
        raise LuneFormatError(f"{source}: {what} are numbered {found}, with gaps. The file is incomplete or "
                              "not a UNet; re-download it.")
    return len(found)


def layout_from_diffusers_keys(keys: Iterable[str], source: str = "the UNet") -> UnetLayout:
    """Read the block structure of a diffusers-key UNet from its key names alone."""
    resnets: dict[tuple[str, int], set[int]] = {}
    attn_depth: dict[tuple[str, int, int], int] = {}
    mid_resnets: set[int] = set()
    mid_attn: dict[int, int] = {}
    for key in keys:
        if m := _DIFF_RESNET.match(key):
            resnets.setdefault((m[1], int(m[2])), set()).add(int(m[3]))
        elif m := _DIFF_ATTN.match(key):
            slot = (m[1], int(m[2]), int(m[3]))
            attn_depth[slot] = max(attn_depth.get(slot, 0), int(m[4]) + 1 if m[4] is not None else 0)
        elif m := _DIFF_MID_RESNET.match(key):
            mid_resnets.add(int(m[1]))
        elif m := _DIFF_MID_ATTN.match(key):
            i = int(m[1])
            mid_attn[i] = max(mid_attn.get(i, 0), int(m[2]) + 1 if m[2] is not None else 0)

    def blocks(kind: str) -> tuple[tuple[int, ...], ...]:
        count = _contiguous((lv for k, lv in resnets if k == kind), f"{kind}", source)
        out = []
        for level in range(count):
            n = _contiguous(resnets[(kind, level)], f"{kind}.{level}.resnets", source)
            out.append(tuple(attn_depth.get((kind, level, i), 0) for i in range(n)))
        return tuple(out)

    down, up = blocks("down_blocks"), blocks("up_blocks")
    if not mid_resnets and not mid_attn:
        mid = None
    elif mid_resnets == {0} and not mid_attn:
        mid = -1
    elif mid_resnets == {0, 1} and set(mid_attn) == {0} and mid_attn[0] > 0:
        mid = mid_attn[0]
    else:
        raise LuneFormatError(f"{source}: unsupported mid block (resnets {sorted(mid_resnets)}, attentions "
                              f"{sorted(mid_attn)}); an LDM UNet has resnet, attention, resnet or a lone resnet.")
    layout = UnetLayout(down=down, up=up, mid=mid)
    layout.validate(source)
    return layout


def layout_from_ldm_keys(keys: Iterable[str], source: str = "the UNet") -> UnetLayout:
    """Read the block structure of an LDM-key UNet (no ``model.diffusion_model.`` prefix) from its key names.

    Input blocks: ``.0.op`` marks a downsampler (ends a level), ``.0.*`` a resnet, ``.1.*`` its attention.
    Output blocks: ``.0.*`` resnet, ``.1.*`` attention unless it is ``.1.conv`` (an upsampler), ``.N.conv`` with
    N = 1 or 2 an upsampler (ends a level).
    """
    inputs: dict[int, dict[str, Any]] = {}
    outputs: dict[int, dict[str, Any]] = {}
    mid: dict[int, int] = {}
    for key in keys:
        if m := _LDM_BLOCK.match(key):
            table = inputs if m[1] == "input_blocks" else outputs
            block = table.setdefault(int(m[2]), {"resnet": False, "attn": 0, "resample": False})
            slot, rest = int(m[3]), m[4]
            if m[1] == "input_blocks" and int(m[2]) == 0:
                continue  # conv_in
            if slot == 0 and rest.startswith("op."):
                block["resample"] = True
            elif slot == 0:
                block["resnet"] = True
            elif rest.startswith("conv."):
                block["resample"] = True
            else:
                d = _LDM_DEPTH.match(rest)
                block["attn"] = max(block["attn"], int(d[1]) + 1 if d else 0)
        elif m := _LDM_MID.match(key):
            i = int(m[1])
            mid[i] = max(mid.get(i, 0), int(m[2]) + 1 if m[2] is not None else 0)

    down: list[tuple[int, ...]] = []
    current: list[int] = []
    last_in = _contiguous(inputs, "input_blocks", source) if inputs else 0
    for n in range(1, last_in):
        block = inputs[n]
        if block["resample"]:
            down.append(tuple(current))
            current = []
        else:
            current.append(block["attn"])
    if current:
        down.append(tuple(current))

    up: list[tuple[int, ...]] = []
    current = []
    for n in range(_contiguous(outputs, "output_blocks", source) if outputs else 0):
        block = outputs[n]
        current.append(block["attn"])
        if block["resample"]:
            up.append(tuple(current))
            current = []
    if current:
        up.append(tuple(current))

    if not mid:
        mid_depth = None
    elif set(mid) == {0}:
        mid_depth = -1
    elif set(mid) == {0, 1, 2} and mid[1] > 0:
        mid_depth = mid[1]
    else:
        raise LuneFormatError(f"{source}: unsupported middle block (modules {sorted(mid)}); an LDM UNet has "
                              "middle_block.0-2 (resnet, attention, resnet) or middle_block.0 alone.")
    layout = UnetLayout(down=tuple(down), up=tuple(up), mid=mid_depth)
    layout.validate(source)
    return layout


# ------------------------------------------------------------------------------------------------ key renaming

def _rename(keys: list[str], table: dict[str, str], source: str, direction: str) -> dict[str, str]:
    out: dict[str, str] = {}
    unmapped: list[str] = []
    for key in keys:
        module, _, param = key.rpartition(".")
        target = table.get(module)
        if target is None or param not in _PARAMS:
            unmapped.append(key)
        else:
            out[key] = f"{target}.{param}"
    if unmapped:
        if direction == "diffusers":
            for prefix, what in _FOREIGN_DIFFUSERS_PREFIXES:
                if any(k.startswith(prefix) for k in unmapped):
                    raise UnsupportedModelError(f"{source} is {what}, not an SD1.5 UNet. Lune is SD1.5-based: "
                                                "load this model with ComfyUI's stock loaders.")
        sample = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
        raise LuneFormatError(f"{source}: {len(unmapped)} of {len(keys)} keys do not fit the SD1.5 UNet {direction} "
                              f"layout read from the file (e.g. {sample}). The file is damaged or holds a different "
                              "kind of model; use an SD1.5/Lune UNet in diffusers or LDM layout.")
    return out


def diffusers_to_ldm_keys(keys: Iterable[str], source: str = "the UNet") -> dict[str, str]:
    """Map every diffusers UNet key to its LDM name (no prefix). Raises LuneFormatError on any unknown key."""
    keys = list(keys)
    layout = layout_from_diffusers_keys(keys, source)
    return _rename(keys, dict(module_pairs(layout)), source, "diffusers")


def ldm_to_diffusers_keys(keys: Iterable[str], source: str = "the UNet") -> dict[str, str]:
    """Map every LDM UNet key (no prefix) to its diffusers name. Raises LuneFormatError on any unknown key."""
    keys = list(keys)
    layout = layout_from_ldm_keys(keys, source)
    return _rename(keys, {ldm: diff for diff, ldm in module_pairs(layout)}, source, "LDM")


def diffusers_to_ldm(state_dict: Mapping[str, Any], config: dict | None = None, *,
                     source: str = "the UNet") -> dict[str, Any]:
    """Re-key a diffusers SD1.5 UNet state dict to the LDM/ComfyUI layout (keys without prefix).

    Tensors are passed through as the same objects (no copy, mmapped storages stay lazy). ``config`` is the
    diffusers ``unet/config.json`` dict when there is one; it is cross-checked against the weights and a
    disagreement raises LuneFormatError (see :func:`check_diffusers_config`).
    """
    keys = list(state_dict.keys())
    layout = layout_from_diffusers_keys(keys, source)
    if config is not None:
        check_diffusers_config(layout, config, state_dict, source=source)
    names = _rename(keys, dict(module_pairs(layout)), source, "diffusers")
    log.debug("%s: renamed %d diffusers UNet keys to LDM (layout %s)", source, len(names), layout)
    return {names[k]: state_dict[k] for k in keys}


def ldm_to_diffusers(state_dict: Mapping[str, Any], *, source: str = "the UNet") -> dict[str, Any]:
    """Re-key an LDM UNet state dict (keys without ``model.diffusion_model.``) to diffusers names; no copies."""
    keys = list(state_dict.keys())
    names = ldm_to_diffusers_keys(keys, source)
    return {names[k]: state_dict[k] for k in keys}


# --------------------------------------------------------------------------------------------- config checking

def _shape_getter(state_dict: Mapping[str, Any] | None) -> Callable[[str], tuple[int, ...] | None]:
    def shape_of(key: str) -> tuple[int, ...] | None:
        if state_dict is None or key not in state_dict:
            return None
        shape = getattr(state_dict[key], "shape", None)
        return None if shape is None else tuple(shape)
    return shape_of


def _per_level(value: Any, levels: int) -> list | None:
    if value is None:
        return None
    return [value] * levels if isinstance(value, (int, float)) else list(value)


def check_diffusers_config(layout: UnetLayout, config: dict, state_dict: Mapping[str, Any] | None = None, *,
                           source: str = "the UNet") -> None:
    """Cross-check a diffusers UNet ``config.json`` dict against the structure (and shapes) of the weights.

    Checked when present in ``config``: ``_class_name``, ``block_out_channels``, ``layers_per_block``,
    ``down_block_types``/``up_block_types`` (CrossAttn* = has attention), ``mid_block_type``,
    ``transformer_layers_per_block``, ``cross_attention_dim``, ``in_channels``, ``out_channels``,
    ``use_linear_projection``. Shape checks need ``state_dict``. Raises LuneFormatError listing every mismatch.
    """
    shape_of = _shape_getter(state_dict)
    levels = layout.num_levels
    problems: list[str] = []

    cls = config.get("_class_name")
    if cls is not None and cls != "UNet2DConditionModel":
        problems.append(f"_class_name is {cls!r}, expected 'UNet2DConditionModel'")

    channels = config.get("block_out_channels")
    if channels is not None:
        if len(channels) != levels:
            problems.append(f"block_out_channels has {len(channels)} entries, the weights have {levels} down blocks")
        else:
            for level, want in enumerate(channels):
                got = shape_of(f"down_blocks.{level}.resnets.0.conv1.weight")
                if got is not None and got[0] != want:
                    problems.append(f"block_out_channels[{level}] is {want}, the weights have {got[0]}")

    per_level = _per_level(config.get("layers_per_block"), levels)
    if per_level is not None:
        got = [len(d) for d in layout.down]
        if per_level != got:
            problems.append(f"layers_per_block is {config.get('layers_per_block')}, the weights have {got}")

    for field, blocks in (("down_block_types", layout.down), ("up_block_types", layout.up)):
        types = config.get(field)
        if types is None:
            continue
        if len(types) != len(blocks):
            problems.append(f"{field} has {len(types)} entries, the weights have {len(blocks)}")
            continue
        for idx, (kind, depths) in enumerate(zip(types, blocks)):
            if ("CrossAttn" in str(kind)) != any(d > 0 for d in depths):
                state = "has" if any(d > 0 for d in depths) else "has no"
                problems.append(f"{field}[{idx}] is {kind!r} but that block {state} attention in the weights")

    if "mid_block_type" in config:
        kind = config["mid_block_type"]
        if kind is None and layout.mid is not None:
            problems.append("mid_block_type is null but the weights have a mid block")
        elif kind is not None and "CrossAttn" in str(kind) and (layout.mid is None or layout.mid < 1):
            problems.append(f"mid_block_type is {kind!r} but the weights have no mid-block attention")

    depth_cfg = _per_level(config.get("transformer_layers_per_block"), levels)
    if depth_cfg is not None and len(depth_cfg) == levels and all(isinstance(d, int) for d in depth_cfg):
        for level, depths in enumerate(layout.down):
            for depth in depths:
                if depth > 0 and depth != depth_cfg[level]:
                    problems.append(f"transformer_layers_per_block[{level}] is {depth_cfg[level]}, "
                                    f"the weights have {depth}")
                    break

    to_k = next((k for k in (state_dict or {}) if k.endswith("attn2.to_k.weight")), None)
    if "cross_attention_dim" in config and to_k is not None:
        got = shape_of(to_k)
        if got is not None and len(got) == 2 and got[1] != config["cross_attention_dim"]:
            problems.append(f"cross_attention_dim is {config['cross_attention_dim']}, the weights have {got[1]}")
    for field, key, axis in (("in_channels", "conv_in.weight", 1), ("out_channels", "conv_out.weight", 0)):
        got = shape_of(key)
        if field in config and got is not None and got[axis] != config[field]:
            problems.append(f"{field} is {config[field]}, the weights have {got[axis]}")
    proj_in = next((k for k in (state_dict or {}) if k.endswith(".proj_in.weight")), None)
    if "use_linear_projection" in config and proj_in is not None:
        got = shape_of(proj_in)
        if got is not None and (len(got) == 2) != bool(config["use_linear_projection"]):
            problems.append(f"use_linear_projection is {config['use_linear_projection']}, the weights use "
                            f"{'linear' if len(got) == 2 else '1x1 conv'} proj_in")

    if problems:
        raise LuneFormatError(f"{source}: its config.json does not match the weights: {'; '.join(problems)}. "
                              "Use the config.json that came with these weights, or remove it so the layout is "
                              "read from the weights alone.")


# ------------------------------------------------------------------------------------------------- predicates

def is_diffusers_unet(keys: Iterable[str], prefix: str = "") -> bool:
    """True when ``keys`` look like a diffusers UNet (``conv_in.weight`` and ``down_blocks.*``) under ``prefix``."""
    keys = keys if isinstance(keys, (Set, Mapping)) else set(keys)
    return f"{prefix}conv_in.weight" in keys and any(k.startswith(f"{prefix}down_blocks.") for k in keys)


def is_ldm_unet(keys: Iterable[str], prefix: str = "") -> bool:
    """True when ``keys`` look like an LDM UNet (``input_blocks.0.0.weight`` and ``output_blocks.*``)."""
    keys = keys if isinstance(keys, (Set, Mapping)) else set(keys)
    return f"{prefix}input_blocks.0.0.weight" in keys and any(k.startswith(f"{prefix}output_blocks.") for k in keys)
