"""Unit tests of the Lyra v1 module, config and Cantor routing (docs/reference.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_lune.lyra import (
    LyraConfig,
    LyraConfigError,
    LyraInputError,
    LyraVAE,
    cantor_coordinate,
    cantor_coordinates,
    nearest_routes,
)
from comfyui_lune.lyra.cantor import CantorFusion
from testbed.fixtures.lyra_files import (
    CANTOR_COORDS_M2,
    PUBLISHED_PARAM_COUNT,
    CANTOR_ROUTES_M2,
    TINY,
    random_state_dict,
    spec_shapes,
    tiny_config,
    tiny_shapes,
    trainer_config,
)
from tests.numerics import RTOL_FORMULA


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def full_state() -> dict[str, torch.Tensor]:
    return random_state_dict(spec_shapes(), seed=123)


@pytest.fixture(scope="module")
def full_model(full_state) -> LyraVAE:
    model = LyraVAE()
    model.load_state_dict(full_state, strict=True)
    return model.eval()


def _inputs(b: int = 2, tokens: int = 77, clip: int = 768, t5: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"clip": torch.randn(b, tokens, clip, generator=g), "t5": torch.randn(b, tokens, t5, generator=g)}


# --------------------------------------------------------------------------- layout
def test_param_count_default_config_is_17073665():
    model = LyraVAE()
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAM_COUNT == 17_073_665


# docs/reference.md §3 (state-dict keys), expanded by hand (not derived from any module).
PUBLISHED_KEYS = """
fusion.modality_projections.clip.weight fusion.modality_projections.clip.bias
fusion.modality_projections.t5.weight fusion.modality_projections.t5.bias
fusion.modality_embeddings
fusion.q_proj.weight fusion.q_proj.bias fusion.k_proj.weight fusion.k_proj.bias
fusion.v_proj.weight fusion.v_proj.bias fusion.out_proj.weight fusion.out_proj.bias
fusion.modality_cantor_coords fusion.modality_routes fusion.temperature
encoder.0.weight encoder.0.bias encoder.1.weight encoder.1.bias
encoder.4.weight encoder.4.bias encoder.5.weight encoder.5.bias
encoder.8.weight encoder.8.bias encoder.9.weight encoder.9.bias
fc_mu.weight fc_mu.bias fc_logvar.weight fc_logvar.bias
decoders.clip.0.weight decoders.clip.0.bias decoders.clip.1.weight decoders.clip.1.bias
decoders.clip.4.weight decoders.clip.4.bias decoders.clip.5.weight decoders.clip.5.bias
decoders.clip.8.weight decoders.clip.8.bias
decoders.t5.0.weight decoders.t5.0.bias decoders.t5.1.weight decoders.t5.1.bias
decoders.t5.4.weight decoders.t5.4.bias decoders.t5.5.weight decoders.t5.5.bias
decoders.t5.8.weight decoders.t5.8.bias
""".split()


def test_state_dict_keys_and_shapes_equal_spec_table():
    sd = LyraVAE().state_dict()
    assert len(PUBLISHED_KEYS) == len(set(PUBLISHED_KEYS)) == 52
    assert set(sd) == set(PUBLISHED_KEYS)
    expected = spec_shapes()  # the fixture's shape table, also written out from docs/reference.md §3
    assert set(expected) == set(PUBLISHED_KEYS)
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


def test_buffers_dtypes_and_persistence():
    model = LyraVAE()
    sd = model.state_dict()
    assert sd["fusion.modality_cantor_coords"].dtype == torch.float32
    assert sd["fusion.modality_routes"].dtype == torch.int64
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"fusion.modality_cantor_coords", "fusion.modality_routes"}
    assert sd["fusion.temperature"].shape == () and math.isclose(sd["fusion.temperature"].item(), 0.07, rel_tol=1e-6)
    assert sd["fusion.modality_cantor_coords"].tolist() == CANTOR_COORDS_M2
    assert sd["fusion.modality_routes"].tolist() == CANTOR_ROUTES_M2


def test_layer_types_exact_gelu_and_layernorm_eps():
    model = LyraVAE()
    enc = model.encoder
    assert [type(m).__name__ for m in enc] == [
        "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm"
    ]
    dec = model.decoders["clip"]
    assert [type(m).__name__ for m in dec] == [
        "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout", "Linear"
    ]
    for mod in model.modules():
        if isinstance(mod, torch.nn.GELU):
            assert mod.approximate == "none"
        if isinstance(mod, torch.nn.LayerNorm):
            assert mod.eps == 1e-5 and mod.elementwise_affine
    assert list(model.decoders) == ["clip", "t5"]


# --------------------------------------------------------------------------- cantor
def test_cantor_two_modalities():
    assert cantor_coordinates(2).tolist() == [0.0, 0.99609375]
    assert nearest_routes(cantor_coordinates(2)).tolist() == [[0, 1], [1, 0]]


def test_cantor_one_modality():
    assert cantor_coordinates(1).tolist() == [0.0]
    assert nearest_routes(cantor_coordinates(1)).tolist() == [[0]]


def _spec_coordinate(i: int, m: int) -> float:
    """docs/reference.md §3 step 3, re-derived: digits of the clamped x in base 3, digit 2 at k adds 2^-k."""
    x = min(max(i / max(1, m - 1), 1e-6), 1 - 1e-6)
    total = 0.0
    for k in range(1, 9):
        x = x * 3
        digit = math.floor(x)
        x = x - digit
        total += 2.0 ** -k if digit == 2 else 0.0
    return total


def test_cantor_three_modalities():
    coords = cantor_coordinates(3)
    # x = 1e-6 -> 0; x = 0.5 = 0.1111...(base 3) -> 0; x = 1 - 1e-6 -> 0.22222222 -> 1 - 2^-8
    assert coords.tolist() == [0.0, 0.0, 0.99609375]
    assert coords.tolist() == [_spec_coordinate(i, 3) for i in range(3)]
    routes = nearest_routes(coords)
    assert routes.shape == (3, 3) and routes.dtype == torch.int64
    for row in routes.tolist():
        assert sorted(row) == [0, 1, 2]
    # Ties between 0 and 1 may come in any order, but 2 is farthest from 0 and 1 and nearest to itself.
    assert routes[0, 2] == 2 and routes[1, 2] == 2 and routes[2, 0] == 2


def test_cantor_five_modalities_against_hand_expansion():
    # 0.25 = 0.020202..._3 -> 2^-2+2^-4+2^-6+2^-8; 0.75 = 0.202020..._3 -> 2^-1+2^-3+2^-5+2^-7
    expected = [0.0, 0.33203125, 0.0, 0.6640625, 0.99609375]
    assert cantor_coordinates(5).tolist() == expected
    assert [cantor_coordinate(i, 5) for i in range(5)] == expected
    routes = nearest_routes(cantor_coordinates(5))
    assert routes.shape == (5, 3)
    assert routes[4].tolist()[0] == 4 and routes[4].tolist()[1] == 3


def test_cantor_fusion_general_m():
    dims = {"a": 6, "b": 5, "c": 7}
    fusion = CantorFusion(dims, hidden_dim=16, num_heads=4).eval()
    out = fusion({name: torch.randn(2, 3, d) for name, d in dims.items()})
    assert out.shape == (2, 3, 16)
    assert fusion.modality_routes.shape == (3, 3)


def test_loaded_routes_are_authoritative(full_state):
    model = LyraVAE().eval()
    state = dict(full_state)
    state["fusion.modality_routes"] = torch.tensor([[0, 0], [1, 1]])  # self-attention only
    model.load_state_dict(state)
    assert model.fusion.modality_routes.tolist() == [[0, 0], [1, 1]]
    x = _inputs(1, 5)
    with torch.no_grad():
        got = model.reconstruct(x)["clip"]
    ref = reference_forward(state, x)["clip"]
    assert torch.allclose(got, ref.float(), atol=1e-5, rtol=1e-5)
    dense = reference_forward(full_state, x)["clip"]
    assert not torch.allclose(got, dense.float(), atol=1e-3)


# --------------------------------------------------------------------------- reference
def reference_forward(
    state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], heads: int = 8
) -> dict[str, torch.Tensor]:
    """docs/reference.md §3 forward in float64 from the raw state dict: explicit loops over
    modalities, heads and routes; no module code is shared with ``lyra``."""
    sd = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in state.items()}
    names = ["clip", "t5"]
    hidden = sd["fusion.q_proj.weight"].shape[0]
    hd = hidden // heads
    tau = sd["fusion.temperature"].abs()
    routes = sd["fusion.modality_routes"].tolist()

    x = []
    for idx, name in enumerate(names):
        inp = inputs[name].to(torch.float64)
        key = f"fusion.modality_projections.{name}"
        proj = F.linear(inp, sd[f"{key}.weight"], sd[f"{key}.bias"])
        x.append(proj + sd["fusion.modality_embeddings"][idx])
    q = [F.linear(t, sd["fusion.q_proj.weight"], sd["fusion.q_proj.bias"]) for t in x]
    k = [F.linear(t, sd["fusion.k_proj.weight"], sd["fusion.k_proj.bias"]) for t in x]
    v = [F.linear(t, sd["fusion.v_proj.weight"], sd["fusion.v_proj.bias"]) for t in x]

    outs = []
    for i in range(len(names)):
        head_outs = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            scores = torch.stack(
                [(q[i][..., sl] * k[w][..., sl]).sum(-1) / (math.sqrt(hd) * tau) for w in routes[i]], dim=-1
            )
            weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
            weights = weights / weights.sum(dim=-1, keepdim=True)
            o = sum(weights[..., j : j + 1] * v[w][..., sl] for j, w in enumerate(routes[i]))
            head_outs.append(o)
        outs.append(torch.cat(head_outs, dim=-1))
    fused = sum(outs) / len(outs)
    fused = F.linear(fused, sd["fusion.out_proj.weight"], sd["fusion.out_proj.bias"])

    def lin(t, key):
        return F.linear(t, sd[f"{key}.weight"], sd[f"{key}.bias"])

    def ln(t, key):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5) * sd[f"{key}.weight"] + sd[f"{key}.bias"]

    def gelu(t):
        return 0.5 * t * (1.0 + torch.erf(t / math.sqrt(2.0)))

    h = gelu(ln(lin(fused, "encoder.0"), "encoder.1"))
    h = gelu(ln(lin(h, "encoder.4"), "encoder.5"))
    h = ln(lin(h, "encoder.8"), "encoder.9")
    z = lin(h, "fc_mu")
    out = {}
    for name in names:
        d = gelu(ln(lin(z, f"decoders.{name}.0"), f"decoders.{name}.1"))
        d = gelu(ln(lin(d, f"decoders.{name}.4"), f"decoders.{name}.5"))
        out[name] = lin(d, f"decoders.{name}.8")
    out["mu"] = z
    out["logvar"] = lin(h, "fc_logvar")
    return out


def test_module_matches_independent_reference(full_model, full_state):
    x = _inputs(1, 77, seed=7)
    with torch.no_grad():
        mu, logvar = full_model.encode(x)
        rec = full_model.reconstruct(x, mode="mean")
    ref = reference_forward(full_state, x)
    for name in ("clip", "t5"):
        assert rec[name].dtype == torch.float32
        torch.testing.assert_close(rec[name], ref[name].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mu, ref["mu"].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, ref["logvar"].float(), atol=1e-5, rtol=1e-5)
    # the test is not vacuous: outputs vary and the attention is not saturated to one route
    assert rec["clip"].std() > 0.1


def test_tiny_module_matches_reference():
    cfg = LyraConfig.from_dict(tiny_config())
    state = random_state_dict(tiny_shapes(), seed=5)
    model = LyraVAE(cfg).eval()
    model.load_state_dict(state)
    x = _inputs(3, 9, TINY["clip"], TINY["t5"], seed=2)
    with torch.no_grad():
        rec = model.reconstruct(x)
    ref = reference_forward(state, x, heads=TINY["heads"])
    torch.testing.assert_close(rec["clip"], ref["clip"].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rec["t5"], ref["t5"].float(), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("modality", ["clip", "t5"])
def test_each_output_token_depends_only_on_same_index_tokens(full_model, modality):
    x = _inputs(2, 24, seed=3)
    j = 13
    y = {k: v.clone() for k, v in x.items()}
    y[modality][:, j] += 3.0 * torch.randn(2, 768, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = full_model.reconstruct(x, mode="mean")
        b = full_model.reconstruct(y, mode="mean")
    for name in ("clip", "t5"):
        diff = (a[name] - b[name]).abs().amax(dim=(0, 2))  # per token position
        assert diff[j] > 1e-3
        others = torch.cat([diff[:j], diff[j + 1 :]])
        bound = RTOL_FORMULA * a[name].abs().max().item()
        assert others.max() <= bound, f"{name}: positions other than {j} changed ({others.max():.2e} > {bound:.2e})"


def test_mean_mode_is_deterministic(full_model):
    x = _inputs(1, 16, seed=4)
    with torch.no_grad():
        a = full_model.reconstruct(x)["clip"]
        b = full_model.reconstruct(x, mode="mean")["clip"]
    assert torch.equal(a, b)


def test_sample_mode_reproducible_per_seed_and_varies_across_seeds(full_model):
    x = _inputs(1, 16, seed=4)
    with torch.no_grad():
        s1 = full_model.reconstruct(x, mode="sample", generator=torch.Generator().manual_seed(1))["clip"]
        s1b = full_model.reconstruct(x, mode="sample", generator=torch.Generator().manual_seed(1))["clip"]
        s2 = full_model.reconstruct(x, mode="sample", generator=torch.Generator().manual_seed(2))["clip"]
        mean = full_model.reconstruct(x, mode="mean")["clip"]
    assert torch.equal(s1, s1b)
    assert not torch.allclose(s1, s2)
    assert not torch.allclose(s1, mean)


def test_reconstruct_modality_and_encode_mean_equal_the_full_pass_bit_for_bit(full_model):
    """The shortcut Lyra Encode uses (no t5 decoder; no fc_logvar in mean mode) changes no bit of the result."""
    x = _inputs(2, 16, seed=6)
    with torch.no_grad():
        assert torch.equal(full_model.encode_mean(x), full_model.encode(x)[0])
        for name in ("clip", "t5"):
            assert torch.equal(full_model.reconstruct_modality(x, name, "mean"), full_model.reconstruct(x)[name])
            gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            fast = full_model.reconstruct_modality(x, name, "sample", gen_a)
            full = full_model.reconstruct(x, mode="sample", generator=gen_b)[name]
            assert torch.equal(fast, full)
    with pytest.raises(LyraInputError, match="no 'pooled' decoder"):
        full_model.reconstruct_modality(x, "pooled")
    with pytest.raises(LyraInputError, match="mode"):
        full_model.reconstruct_modality(x, "clip", "median")


def test_transform_conditioning_is_blend_of_chunk_zero(full_model):
    """``transform_conditioning`` = blend(chunk 0, reconstruct_modality(chunk 0, t5)) then the other chunks, in the
    conditioning's dtype; a [1, 77, 768] T5 state is shared by every row of a CLIP batch."""
    from comfyui_lune.lyra import transform_conditioning

    g = torch.Generator().manual_seed(8)
    cond = torch.randn(2, 154, 768, generator=g).to(torch.float16)
    t5 = torch.randn(1, 77, 768, generator=g)
    out = transform_conditioning(full_model, cond, t5, mode="mean", strength=0.5)
    with torch.no_grad():
        recon = full_model.reconstruct_modality({"clip": cond[:, :77].float(), "t5": t5.expand(2, -1, -1)}, "clip")
    ref = (cond[:, :77].float() + 0.5 * (recon - cond[:, :77].float())).to(torch.float16)
    assert out.dtype == torch.float16 and out.shape == cond.shape
    assert torch.equal(out[:, :77], ref) and torch.equal(out[:, 77:], cond[:, 77:])
    a = transform_conditioning(full_model, cond, t5, mode="sample", seed=4)
    assert torch.equal(a, transform_conditioning(full_model, cond, t5, mode="sample", seed=4))
    assert not torch.equal(a, transform_conditioning(full_model, cond, t5, mode="sample", seed=5))


def test_sample_latent_formula():
    mu = torch.randn(1, 3, 4)
    logvar = torch.randn(1, 3, 4)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(11))
    z = LyraVAE.sample_latent(mu, logvar, torch.Generator().manual_seed(11))
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)


def test_rejects_unknown_mode(full_model):
    with pytest.raises(LyraInputError, match="mode"):
        full_model.reconstruct(_inputs(1, 2), mode="median")


def test_inputs_cast_to_model_dtype(full_model):
    x = {k: v.half() for k, v in _inputs(1, 4).items()}
    with torch.no_grad():
        out = full_model.reconstruct(x)
    assert out["clip"].dtype == torch.float32


# --------------------------------------------------------------------------- input validation
def test_rejects_t5_xxl_width_with_fix(full_model):
    with pytest.raises(LyraInputError) as err:
        full_model.encode({"clip": torch.randn(1, 77, 768), "t5": torch.randn(1, 77, 4096)})
    msg = str(err.value)
    assert "T5 features are 4096 wide" in msg and "t5-base (768)" in msg and "stable_audio" in msg


def test_rejects_sdxl_clip_width_with_fix(full_model):
    with pytest.raises(LyraInputError) as err:
        full_model.encode({"clip": torch.randn(1, 77, 2048), "t5": torch.randn(1, 77, 768)})
    msg = str(err.value)
    assert "CLIP features are 2048 wide" in msg and "SD1.5 CLIP-L (768)" in msg and "SDXL" in msg


@pytest.mark.parametrize(
    "inputs, needle",
    [
        ({"clip": torch.randn(1, 77, 768)}, "missing ['t5']"),
        ({"t5": torch.randn(1, 77, 768)}, "missing ['clip']"),
        (
            {"clip": torch.randn(1, 77, 768), "t5": torch.randn(1, 77, 768), "g": torch.randn(1, 77, 768)},
            "unexpected ['g']",
        ),
        ({"clip": torch.randn(2, 77, 768), "t5": torch.randn(1, 77, 768)}, "batch sizes differ"),
        ({"clip": torch.randn(1, 77, 768), "t5": torch.randn(1, 128, 768)}, "exactly 77 tokens"),
        ({"clip": torch.randn(77, 768), "t5": torch.randn(1, 77, 768)}, "[batch, tokens, 768]"),
        ({"clip": torch.randn(1, 77, 768), "t5": None}, "missing ['t5']"),
    ],
)
def test_input_validation_messages(full_model, inputs, needle):
    with pytest.raises(LyraInputError) as err:
        full_model.encode(inputs)
    assert needle in str(err.value)


def test_decode_rejects_wrong_latent(full_model):
    with pytest.raises(LyraInputError, match="768"):
        full_model.decode(torch.randn(1, 77, 512))


# --------------------------------------------------------------------------- config
def test_default_config_matches_spec():
    cfg = LyraConfig()
    assert cfg.modality_dims == {"clip": 768, "t5": 768}
    assert list(cfg.modality_dims) == ["clip", "t5"]
    assert (cfg.latent_dim, cfg.hidden_dim, cfg.encoder_layers, cfg.decoder_layers) == (768, 1024, 3, 3)
    assert (cfg.fusion_strategy, cfg.fusion_heads, cfg.fusion_dropout) == ("cantor", 8, 0.1)
    assert (cfg.dropout, cfg.seq_len) == (0.1, 77)
    assert cfg.head_dim == 128


def test_config_from_trainer_dict_ignores_unknown_keys():
    d = trainer_config()
    assert len(d) == 41
    cfg = LyraConfig.from_dict(d)
    assert cfg == LyraConfig()
    assert LyraConfig.from_dict(cfg.to_dict()) == cfg


def test_config_from_json(tmp_path):
    import json

    p = tmp_path / "config.json"
    p.write_text(json.dumps(trainer_config({"fusion_heads": 4})))
    assert LyraConfig.from_json(p).fusion_heads == 4
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LyraConfigError, match="bad.json"):
        LyraConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(LyraConfigError, match="not found"):
        LyraConfig.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"fusion_strategy": "concat"}, "fusion_strategy is 'concat' but this encoder supports only 'cantor'"),
        ({"fusion_strategy": "adaptive_cantor"}, "v2"),
        ({"fusion_strategy": "geometric"}, "AbstractPhil/vae-lyra"),
        ({"hidden_dim": 1030}, "not divisible by fusion_heads"),
        ({"latent_dim": 0}, "latent_dim must be a positive integer"),
        ({"encoder_layers": -1}, "encoder_layers must be a positive integer"),
        ({"fusion_heads": True}, "fusion_heads must be a positive integer"),
        ({"seq_len": 77.0}, "seq_len must be a positive integer"),
        ({"dropout": 1.5}, "dropout must be a number in [0, 1)"),
        ({"modality_dims": {"clip": 768}}, "exactly ['clip', 't5']"),
        ({"modality_dims": {"clip_l": 768, "clip_g": 1280, "t5_xl": 2048}}, "exactly ['clip', 't5']"),
        ({"modality_dims": {"clip": 768, "t5": -768}}, "modality_dims['t5'] must be a positive integer"),
        ({"modality_dims": {"cl.ip": 768, "t5": 768}}, "not a valid module name"),
        ({"modality_dims": []}, "non-empty mapping"),
    ],
)
def test_config_validation(override, needle):
    d = trainer_config(override)
    with pytest.raises(LyraConfigError) as err:
        LyraConfig.from_dict(d, source="config.json")
    msg = str(err.value)
    assert needle in msg
    assert msg.startswith("config.json:")
    assert "config.json that ships with" in msg


def test_config_rejects_non_mapping():
    with pytest.raises(LyraConfigError, match="JSON object"):
        LyraConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_config_constructor_validates():
    with pytest.raises(LyraConfigError, match="cantor"):
        LyraConfig(fusion_strategy="concat")


def test_modality_order_follows_config():
    cfg = LyraConfig.from_dict({"modality_dims": {"t5": 768, "clip": 768}})
    assert cfg.modality_names == ("t5", "clip")
    assert LyraVAE(cfg).modality_names == ("t5", "clip")
