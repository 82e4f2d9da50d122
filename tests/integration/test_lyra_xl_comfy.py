"""Lyra Encode SDXL in the real ComfyUI: the node's conditioning equals a plain-torch forward of each layout (v1-xl,
v2-soft, v2-hard; tests/unit/test_lyra_xl.py's float64 reference) on ComfyUI's own SDXL encode and transformers'
T5 states; pooled unchanged; strength 0 bit for bit; a long prompt keeps its second chunk; wrong wiring refused."""
from __future__ import annotations

import sys

import pytest
import torch

from testbed.env import place_model
from testbed.fixtures import lyra_files
from testbed.fixtures.lyra_xl_files import V1_XL, V2_HARD, V2_SOFT, random_state, write_published
from testbed.fixtures.t5xl_files import tiny_flan_t5
from tests.numerics import assert_close_rel
from tests.unit.test_lyra_xl import reference

pytestmark = pytest.mark.comfy

PROMPT = "a watercolor painting of a (lighthouse:1.2) on a cliff at dusk, soft light"
LONG_PROMPT = ", ".join(["a red cat"] * 37)  # 147 one-token words and commas: two 77-token chunks
SIZES = {"clip_l": 768, "clip_g": 1280, "t5": 64, "hidden": 32, "latent": 16, "heads": 4}
FORMS = {V1_XL: "trainer", V2_SOFT: "bare", V2_HARD: "weights"}
STOCK = "stock SDXL (penultimate)"


@pytest.fixture(scope="module")
def t5_fixture(tmp_path_factory):
    return tiny_flan_t5(tmp_path_factory.mktemp("flan_t5_xl_node"), seed=4)


@pytest.fixture(scope="module")
def states():
    return {kind: random_state(kind, SIZES, seed=11 + i) for i, kind in enumerate((V1_XL, V2_SOFT, V2_HARD))}


@pytest.fixture(scope="module")
def names(comfy, comfy_base, tmp_path_factory, t5_fixture, states):
    from testbed.fixtures.sdxl_files import build_sdxl_fixture

    ckpt = build_sdxl_fixture(None).single_file
    out = {"ckpt": place_model(comfy_base, "checkpoints", ckpt, "sdxl_tiny.safetensors"),
           "t5": place_model(comfy_base, "text_encoders", t5_fixture[0], "flan_t5_tiny_xl.safetensors")}
    root = tmp_path_factory.mktemp("lyra_xl_files")
    for kind, state in states.items():
        from testbed.fixtures.lyra_xl_files import config_for

        path = write_published(root / kind, kind, state, FORMS[kind], config_for(kind, SIZES))
        folder = place_model(comfy_base, "lyra", root / kind, f"xl_{kind}")
        out[kind] = f"{folder}/{path.relative_to(root / kind).as_posix()}"
    sd15 = tmp_path_factory.mktemp("lyra_sd15")
    lyra_files.write_trainer_pt(sd15 / "model.pt", lyra_files.random_state_dict(lyra_files.tiny_shapes()),
                                lyra_files.tiny_config())
    out["sd15_lyra"] = place_model(comfy_base, "lyra", sd15, "sd15_tiny") + "/model.pt"
    return out


@pytest.fixture(scope="module")
def parts(comfy, names):
    n = comfy.nodes
    clip = n.CheckpointLoaderSimple().load_checkpoint(names["ckpt"])[1]
    t5 = n.NODE_CLASS_MAPPINGS["LyraT5XLLoader"]().load(names["t5"], dtype="fp32")[0]
    loader = n.NODE_CLASS_MAPPINGS["LyraLoader"]()
    lyras = {kind: loader.load(names[kind])[0] for kind in (V1_XL, V2_SOFT, V2_HARD, "sd15_lyra")}
    return clip, t5, lyras


@pytest.fixture(scope="module")
def node(comfy):
    return comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncodeSDXL"]()


@pytest.fixture(scope="module")
def xl_inputs(comfy):
    return sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncodeSDXL"].__module__].lyra_xl_inputs


@pytest.fixture(scope="module")
def stock(comfy, parts):
    memo = {}

    def get(text):
        if text not in memo:
            memo[text] = comfy.nodes.CLIPTextEncode().encode(parts[0], text)[0]
        return memo[text]
    return get


def _hf_t5(model, ids):
    mask = [1 if i < ids.index(1) + 1 else 0 for i in range(len(ids))]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])).last_hidden_state


@pytest.mark.parametrize("kind", [V1_XL, V2_SOFT, V2_HARD])
def test_node_equals_plain_torch_forward(kind, parts, node, stock, states, t5_fixture, xl_inputs):
    clip, t5, lyras = parts
    assert lyras[kind].model.spec.kind == kind
    out = node.encode(clip, t5, lyras[kind], PROMPT, clip_layer=STOCK)[0]
    base = stock(PROMPT)
    cond = base[0][0].float()
    ids = xl_inputs.t5_ids(t5, PROMPT, 77 if kind == V1_XL else 512)
    t5_ref = _hf_t5(t5_fixture[1], ids)
    ref_l, ref_g = reference(kind, states[kind], SIZES["heads"], cond[:, :, :768], cond[:, :, 768:], t5_ref)
    ref = torch.cat([ref_l, ref_g], dim=-1)
    assert out[0][0].shape == base[0][0].shape == (1, 77, 2048)
    assert_close_rel(out[0][0], ref, 1e-4, f"{kind} conditioning vs plain torch")
    assert torch.equal(out[0][1]["pooled_output"], base[0][1]["pooled_output"])  # pooled unchanged


def test_auto_clip_layer_follows_the_model(parts, node, stock, states, t5_fixture, xl_inputs):
    """auto: Illustrious (hard) reads the stock encode; the adaptive-cantor (soft) model reads the final-normed last
    layer, and its output still blends with / passes through the stock encode (chunk 0 = recon at strength 1)."""
    clip, t5, lyras = parts
    hard = node.encode(clip, t5, lyras[V2_HARD], PROMPT)[0]
    hard_stock = node.encode(clip, t5, lyras[V2_HARD], PROMPT, clip_layer=STOCK)[0]
    assert torch.equal(hard[0][0], hard_stock[0][0])
    soft = node.encode(clip, t5, lyras[V2_SOFT], PROMPT)[0]
    last = xl_inputs.clip_conditioning(clip, PROMPT, "last")[0][0].float()
    t5_ref = _hf_t5(t5_fixture[1], xl_inputs.t5_ids(t5, PROMPT, 512))
    ref = torch.cat(reference(V2_SOFT, states[V2_SOFT], SIZES["heads"], last[..., :768], last[..., 768:], t5_ref), -1)
    assert_close_rel(soft[0][0], ref, 1e-4, "soft, auto = last layer")
    half = node.encode(clip, t5, lyras[V2_SOFT], PROMPT, strength=0.5)[0]
    base = stock(PROMPT)[0][0]
    assert_close_rel(half[0][0], 0.5 * (base + soft[0][0]), 1e-5, "strength 0.5 blends with the stock encode")
    assert torch.equal(soft[0][1]["pooled_output"], stock(PROMPT)[0][1]["pooled_output"])


def test_last_layer_is_final_layernorm_of_the_last_block(comfy, parts, xl_inputs):
    """'last' = ComfyUI's CLIP-L/CLIP-G last block output after the final LayerNorm (Hugging Face last_hidden_state),
    checked against CLIP Set Last Layer −1 (last block, no norm) + the checkpoint's final LayerNorm weights. (An
    unweighted prompt: ComfyUI applies (word:w) weights after the layer output.)"""
    clip, text = parts[0], "a lighthouse on a cliff at dusk"
    last = xl_inputs.clip_conditioning(clip, text, "last")[0][0].float()
    raw = comfy.nodes.CLIPTextEncode().encode(comfy.nodes.CLIPSetLastLayer().set_last_layer(clip, -1)[0], text)[0]
    raw = raw[0][0].float()
    sd = clip.get_sd()
    ln = {}
    for name, width in (("clip_l", 768), ("clip_g", 1280)):
        w = sd[f"{name}.transformer.text_model.final_layer_norm.weight"].float()
        b = sd[f"{name}.transformer.text_model.final_layer_norm.bias"].float()
        ln[name] = (w, b, width)
    ref_l = torch.nn.functional.layer_norm(raw[..., :768], (768,), ln["clip_l"][0], ln["clip_l"][1])
    ref_g = torch.nn.functional.layer_norm(raw[..., 768:], (1280,), ln["clip_g"][0], ln["clip_g"][1])
    assert_close_rel(last, torch.cat([ref_l, ref_g], -1), 1e-4, "final-LN last layer")


def test_strength_zero_is_the_stock_encode_bit_for_bit(parts, node, stock):
    clip, t5, lyras = parts
    out = node.encode(clip, t5, lyras[V2_HARD], PROMPT, strength=0.0, clip_layer=STOCK)[0]
    assert torch.equal(out[0][0], stock(PROMPT)[0][0])
    assert torch.equal(out[0][1]["pooled_output"], stock(PROMPT)[0][1]["pooled_output"])


def test_long_prompt_keeps_the_second_chunk(parts, node, stock):
    clip, t5, lyras = parts
    base = stock(LONG_PROMPT)[0][0]
    assert base.shape[1] == 154, base.shape
    out = node.encode(clip, t5, lyras[V2_HARD], LONG_PROMPT)[0][0][0]
    assert out.shape == base.shape
    assert torch.equal(out[:, 77:], base[:, 77:])
    assert not torch.equal(out[:, :77], base[:, :77])


def test_wrong_wiring_is_refused(comfy, parts, node, tiny_models):
    clip, t5, lyras = parts
    sd15_clip = comfy.nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models["single_file"])[1]
    with pytest.raises(ValueError, match="CLIP-L \\(SD1.5\\).*SDXL"):
        node.encode(sd15_clip, t5, lyras[V2_HARD], PROMPT)
    with pytest.raises(ValueError, match="Lyra v1 for SD1.5.*Lyra Encode"):
        node.encode(clip, t5, lyras["sd15_lyra"], PROMPT)
    with pytest.raises(ValueError, match="flan-t5-xl"):
        node.encode(clip, clip, lyras[V2_HARD], PROMPT)
    sd15_encode = comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncode"]()
    with pytest.raises(ValueError, match="SDXL Lyra.*Lyra Encode SDXL"):
        sd15_encode.encode(sd15_clip, t5, lyras[V2_HARD], PROMPT)


def test_graph_runs_end_to_end(comfy, names):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": names["ckpt"]}},
        "2": {"class_type": "LyraT5XLLoader", "inputs": {"t5_name": names["t5"]}},
        "3": {"class_type": "LyraLoader", "inputs": {"lyra_name": names[V2_HARD]}},
        "4": {"class_type": "LyraEncodeSDXL", "inputs": {"clip": ["1", 1], "t5": ["2", 0], "lyra": ["3", 0],
                                                         "text": PROMPT, "mode": "mean", "seed": 0, "strength": 1.0,
                                                         "clip_layer": "auto"}},
        "5": {"class_type": "LyraEncodeSDXL", "inputs": {"clip": ["1", 1], "t5": ["2", 0], "lyra": ["3", 0],
                                                         "text": "", "mode": "mean", "seed": 0, "strength": 1.0,
                                                         "clip_layer": "auto"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "seed": 1, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "lyra_xl"}},
    }
    result = comfy.run(graph)
    assert result.ok, result.error_message()
    assert comfy.output_files(result)


def test_loaders_offer_a_download_entry_per_published_model(comfy):
    lyra_options = comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"].INPUT_TYPES()["required"]["lyra_name"][0]
    for repo in ("AbstractPhil/vae-lyra", "AbstractPhil/vae-lyra-sdxl-t5xl", "AbstractPhil/vae-lyra-xl-adaptive-cantor",
                 "AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious"):
        assert f"[download] {repo}" in lyra_options
    t5_options = comfy.nodes.NODE_CLASS_MAPPINGS["LyraT5XLLoader"].INPUT_TYPES()["required"]["t5_name"][0]
    assert "[download] QQGYLab/ELLA" in t5_options
