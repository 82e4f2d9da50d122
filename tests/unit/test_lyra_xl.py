"""Lyra-XL library: layout detection, every published file form, and the forward of each layout against a float64
reference written here from the formulas (docs/reference.md "Lyra-XL"; the author's vae_lyra.py / vae_lyra_v2.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_lune.lyra import LyraCheckpointError, detect_kind, load_any_lyra, load_lyra_xl, transform_sdxl_conditioning
from comfyui_lune.lyra.xl_model import LyraXL
from testbed.fixtures import lyra_files
from testbed.fixtures.lyra_xl_files import (
    HARD_PARAMS,
    SOFT_PARAMS,
    TINY,
    V1_XL,
    V2_HARD,
    V2_SOFT,
    config_for,
    random_state,
    write_published,
    xl_shapes,
)
from tests.numerics import assert_close_rel

KINDS = (V1_XL, V2_SOFT, V2_HARD)
T5_NAMES = {V1_XL: ("t5_xl",), V2_SOFT: ("t5_xl_l", "t5_xl_g"), V2_HARD: ("t5_xl_l", "t5_xl_g")}
ORDER = {V1_XL: ("clip_l", "clip_g", "t5_xl"), V2_SOFT: ("clip_l", "clip_g", "t5_xl_l", "t5_xl_g"),
         V2_HARD: ("clip_l", "clip_g", "t5_xl_l", "t5_xl_g")}


# ------------------------------------------------------------------------------------------ float64 reference
def _lin(st, p, x):
    return x @ st[p + ".weight"].T + st[p + ".bias"]


def _ln(st, p, x):
    return F.layer_norm(x, x.shape[-1:], st[p + ".weight"], st[p + ".bias"], 1e-5)


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _encoder(st, p, x):
    x = _gelu(_ln(st, p + "1", _lin(st, p + "0", x)))
    x = _gelu(_ln(st, p + "5", _lin(st, p + "4", x)))
    return _ln(st, p + "9", _lin(st, p + "8", x))


def _decoder(st, p, z):
    z = _gelu(_ln(st, p + "1", _lin(st, p + "0", z)))
    z = _gelu(_ln(st, p + "5", _lin(st, p + "4", z)))
    return _lin(st, p + "8", z)


def _heads(x, h):
    return x.reshape(*x.shape[:-1], h, x.shape[-1] // h)


def reference(kind, st, heads, clip_l, clip_g, t5):
    """(recon_clip_l, recon_clip_g) with z = mu, in float64, token by token as the formulas say."""
    st = {k: v.double() if v.is_floating_point() else v for k, v in st.items()}
    names = ORDER[kind]
    feats = {"clip_l": clip_l.double(), "clip_g": clip_g.double(), **{n: t5[:, :77].double() for n in T5_NAMES[kind]}}
    xs = []
    for i, n in enumerate(names):
        p = _lin(st, f"fusion.modality_projections.{n}", feats[n])
        if kind != V1_XL:
            a = torch.sigmoid(st[f"fusion.alphas.{n}"])
            g = torch.sigmoid(_lin(st, f"fusion.alpha_gates.{n}.2", _gelu(_lin(st, f"fusion.alpha_gates.{n}.0", p))))
            p = p * (g * a + (1 - a))
        xs.append(p + st["fusion.modality_embeddings"][i])
    q = [_heads(_lin(st, "fusion.q_proj", x), heads) for x in xs]  # [B, L, H, D] each
    k = [_heads(_lin(st, "fusion.k_proj", x), heads) for x in xs]
    v = [_heads(_lin(st, "fusion.v_proj", x), heads) for x in xs]
    d = q[0].shape[-1]
    tau = st["fusion.temperature"].abs()
    binds = {("clip_l", "t5_xl_l"): "clip_l_t5_xl_l", ("clip_g", "t5_xl_g"): "clip_g_t5_xl_g"}
    outs = []
    for i, target in enumerate(names):
        keys = list(range(len(names))) if kind == V2_HARD else st["fusion.modality_routes"][i].tolist()
        s = torch.stack([(q[i] * k[j]).sum(-1) for j in keys], dim=-1) / (math.sqrt(d) * tau)  # [B, L, H, W]
        for w, j in enumerate(keys):
            beta_key = binds.get((target, names[j]))
            if kind == V2_SOFT and beta_key:
                s[..., w] = s[..., w] * torch.sigmoid(st[f"fusion.betas.{beta_key}"])
            if kind == V2_HARD:
                s[..., w] = s[..., w] + st["fusion.binding_mask"][i, j]
                if beta_key:
                    s[..., w] = s[..., w] + torch.sigmoid(st[f"fusion.betas.{beta_key}"])
        a = torch.softmax(s, dim=-1)
        outs.append(sum(a[..., w:w + 1] * v[j] for w, j in enumerate(keys)))
    b, n_tok = clip_l.shape[:2]
    if kind == V1_XL:
        h = _encoder(st, "encoder.", _lin(st, "fusion.out_proj", (sum(outs) / len(outs)).reshape(b, n_tok, -1)))
        mu = _lin(st, "fc_mu", h)
    else:
        mus = []
        for i, n in enumerate(names):
            if kind == V2_SOFT:
                f = _lin(st, "fusion.out_proj", (sum(outs) / len(outs)).reshape(b, n_tok, -1))
            else:  # groups: {clip_l, t5_xl_l} and {clip_g, t5_xl_g}
                group = [0, 2] if i in (0, 2) else [1, 3]
                f = _lin(st, f"fusion.out_projs.{n}", (sum(outs[j] for j in group) / 2).reshape(b, n_tok, -1))
            mus.append(_lin(st, f"fc_mus.{n}", _encoder(st, f"encoders.{n}.", f)))
        mu = sum(mus) / len(mus)
    return _decoder(st, "decoders.clip_l.", mu), _decoder(st, "decoders.clip_g.", mu)


def _features(seed=0, b=2, t5_tokens=512):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 77, TINY["clip_l"], generator=g), torch.randn(b, 77, TINY["clip_g"], generator=g),
            torch.randn(b, t5_tokens, TINY["t5"], generator=g))


# ------------------------------------------------------------------------------------------ layouts
def test_full_size_param_counts_match_the_published_files():
    counts = {k: sum(math.prod(s) for key, s in xl_shapes(k).items()
                     if key.rsplit(".", 1)[-1] not in ("modality_routes", "modality_cantor_coords", "binding_mask"))
              for k in (V2_SOFT, V2_HARD)}
    assert counts == {V2_SOFT: SOFT_PARAMS, V2_HARD: HARD_PARAMS}


@pytest.mark.parametrize("kind", KINDS)
def test_detect_kind_from_keys(kind):
    assert detect_kind(random_state(kind)) == kind


def test_sd15_lyra_is_refused_with_the_fix():
    state = lyra_files.random_state_dict(lyra_files.tiny_shapes())
    with pytest.raises(LyraCheckpointError, match="SD1.5.*Lyra Encode"):
        detect_kind(state)


def test_unknown_layout_is_refused():
    state = random_state(V2_SOFT)
    del state["fusion.out_proj.weight"], state["fusion.out_proj.bias"]
    with pytest.raises(LyraCheckpointError, match="incomplete"):
        detect_kind(state, "x.pt")
    with pytest.raises(LyraCheckpointError, match="no fusion.modality_projections"):
        detect_kind({"a.weight": torch.zeros(2, 2)})


@pytest.mark.parametrize("form", ["trainer", "bare", "weights"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_published_form_loads_and_matches_the_reference(tmp_path, kind, form):
    state = random_state(kind, seed=3)
    path = write_published(tmp_path / "repo", kind, state, form)
    model = load_any_lyra(str(path))
    assert isinstance(model, LyraXL) and model.spec.kind == kind
    assert model.spec.t5_tokens == (77 if kind == V1_XL else 512)
    assert model.spec.clip_layer == ("penultimate" if kind == V2_HARD else "last")
    assert not any(k.startswith("cross_modal") for k in model.state_dict())
    clip_l, clip_g, t5 = _features(1, t5_tokens=model.spec.t5_tokens)
    got_l, got_g = model.reconstruct_clip(clip_l, clip_g, t5)
    ref_l, ref_g = reference(kind, state, TINY["heads"], clip_l, clip_g, t5)
    assert_close_rel(got_l, ref_l, 1e-4, f"{kind} clip_l")
    assert_close_rel(got_g, ref_g, 1e-4, f"{kind} clip_g")


def test_stored_routes_are_used_not_recomputed(tmp_path):
    state = random_state(V2_SOFT, seed=5)
    model = load_lyra_xl(str(write_published(tmp_path / "a", V2_SOFT, state, "bare")))
    swapped = dict(state)
    swapped["fusion.modality_routes"] = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 3, 0], [3, 2, 0]])
    other = load_lyra_xl(str(write_published(tmp_path / "b", V2_SOFT, swapped, "bare")))
    feats = _features(2)
    a, b = model.reconstruct_clip(*feats)[0], other.reconstruct_clip(*feats)[0]
    assert (a - b).abs().max() > 1e-3  # the tie-break matters ...
    # ... and the file's table is the one used
    assert_close_rel(b, reference(V2_SOFT, swapped, TINY["heads"], *feats)[0], 1e-4, "swapped routes")


def test_t5_positions_after_77_do_not_change_the_clip_output(tmp_path):
    model = load_lyra_xl(str(write_published(tmp_path, V2_HARD, random_state(V2_HARD), "weights")))
    clip_l, clip_g, t5 = _features(4)
    t5b = t5.clone()
    t5b[:, 77:] = torch.randn_like(t5b[:, 77:])
    assert torch.equal(model.reconstruct_clip(clip_l, clip_g, t5)[0], model.reconstruct_clip(clip_l, clip_g, t5b)[0])


def test_sample_mode_is_seeded_and_differs_from_mean(tmp_path):
    model = load_lyra_xl(str(write_published(tmp_path, V2_HARD, random_state(V2_HARD), "weights")))
    b = 1
    cond = torch.randn(b, 154, TINY["clip_l"] + TINY["clip_g"])
    t5 = torch.randn(1, 512, TINY["t5"])
    s1 = transform_sdxl_conditioning(model, cond, t5, "sample", seed=7)
    s2 = transform_sdxl_conditioning(model, cond, t5, "sample", seed=7)
    mean = transform_sdxl_conditioning(model, cond, t5, "mean")
    assert torch.equal(s1, s2) and not torch.equal(s1, mean)


def test_transform_strength_and_long_prompt(tmp_path):
    kind = V1_XL
    state = random_state(kind, seed=9)
    model = load_lyra_xl(str(write_published(tmp_path, kind, state, "trainer")))
    cond = torch.randn(2, 154, TINY["clip_l"] + TINY["clip_g"])
    t5 = torch.randn(1, 77, TINY["t5"])
    assert transform_sdxl_conditioning(model, cond, t5, strength=0.0) is cond
    out = transform_sdxl_conditioning(model, cond, t5)
    assert torch.equal(out[:, 77:], cond[:, 77:])
    ref_l, ref_g = reference(kind, state, TINY["heads"], cond[:, :77, :TINY["clip_l"]], cond[:, :77, TINY["clip_l"]:],
                             t5.expand(2, -1, -1))
    assert_close_rel(out[:, :77], torch.cat([ref_l, ref_g], -1), 1e-4, "chunk 0")
    half = transform_sdxl_conditioning(model, cond, t5, strength=0.5)
    assert_close_rel(half[:, :77], 0.5 * (cond[:, :77] + out[:, :77]), 1e-5, "strength 0.5")


def test_corrupt_routes_and_nan_are_refused(tmp_path):
    state = random_state(V2_HARD)
    state["fusion.modality_routes"] = torch.tensor([[0, 1, 9]] * 4)
    with pytest.raises(LyraCheckpointError, match="routing table"):
        load_lyra_xl(str(write_published(tmp_path / "a", V2_HARD, state, "bare")))
    state = random_state(V2_HARD)
    state["fc_mus.clip_l.weight"][0, 0] = float("nan")
    with pytest.raises(LyraCheckpointError, match="NaN"):
        load_lyra_xl(str(write_published(tmp_path / "b", V2_HARD, state, "bare")))


def test_config_one_folder_up_sets_heads(tmp_path):
    cfg = config_for(V2_HARD)
    cfg["fusion_heads"] = 8
    path = write_published(tmp_path, V2_HARD, random_state(V2_HARD), "weights", config=cfg)
    assert load_lyra_xl(str(path)).spec.fusion_heads == 8


def test_lyra_reads_its_own_clip_input_and_blends_with_cond(tmp_path):
    """lyra_input: Lyra reads those CLIP states (e.g. final-normed last layer); the output blends with ``cond``."""
    state = random_state(V2_SOFT, seed=13)
    model = load_lyra_xl(str(write_published(tmp_path, V2_SOFT, state, "bare")))
    g = torch.Generator().manual_seed(3)
    width = TINY["clip_l"] + TINY["clip_g"]
    cond, source = torch.randn(1, 154, width, generator=g), torch.randn(1, 154, width, generator=g)
    t5 = torch.randn(1, 512, TINY["t5"], generator=g)
    out = transform_sdxl_conditioning(model, cond, t5, strength=0.25, lyra_input=source)
    ref = torch.cat(reference(V2_SOFT, state, TINY["heads"], source[:, :77, :TINY["clip_l"]],
                              source[:, :77, TINY["clip_l"]:], t5), -1)
    assert_close_rel(out[:, :77], cond[:, :77] + 0.25 * (ref - cond[:, :77]), 1e-4, "blend with cond")
    assert torch.equal(out[:, 77:], cond[:, 77:])
