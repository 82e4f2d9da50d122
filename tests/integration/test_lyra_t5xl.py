"""Load Lyra T5-XL in the real ComfyUI equals transformers' T5EncoderModel on the same weights (a tiny flan-t5 in the
real flan-t5-xl layout), with and without padding; padding to 512 leaves positions 0..76 unchanged; other T5
families are refused with the reason."""
from __future__ import annotations

import sys

import pytest
import torch

from testbed.env import place_model
from testbed.fixtures.t5xl_files import tiny_flan_t5
from tests.numerics import assert_close_rel

pytestmark = pytest.mark.comfy

PROMPT = "a lighthouse on a cliff at dusk, (soft light:1.3), oil painting"


@pytest.fixture(scope="module")
def t5_fixture(tmp_path_factory):
    return tiny_flan_t5(tmp_path_factory.mktemp("flan_t5"), seed=1)


@pytest.fixture(scope="module")
def pack(comfy):
    return sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraT5XLLoader"].__module__]


@pytest.fixture(scope="module")
def xl_inputs(comfy):
    return sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncodeSDXL"].__module__].lyra_xl_inputs


@pytest.fixture(scope="module")
def t5(comfy, comfy_base, t5_fixture):
    name = place_model(comfy_base, "text_encoders", t5_fixture[0], "flan_t5_tiny.safetensors")
    return comfy.nodes.NODE_CLASS_MAPPINGS["LyraT5XLLoader"]().load(name, dtype="fp32")[0]


def _hf(model, ids, length=None):
    """transformers' last_hidden_state of ``ids`` padded to ``length`` with the attention mask."""
    length = length or len(ids)
    padded = ids + [0] * (length - len(ids))
    mask = [1] * len(ids) + [0] * (length - len(ids))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([padded]), attention_mask=torch.tensor([mask])).last_hidden_state
    return out.double()


def test_tokens_are_the_t5_tokenizer_ids_with_eos(t5, xl_inputs, pack):
    from transformers import T5TokenizerFast

    ids = xl_inputs.t5_ids(t5, PROMPT, 512)
    tokenizer = T5TokenizerFast.from_pretrained(pack.t5_tokenizer_dir())  # the folder ComfyUI ships
    ref = tokenizer("a lighthouse on a cliff at dusk, soft light, oil painting").input_ids
    n = len(ref)
    assert ids[:n] == ref and ref[-1] == 1 and set(ids[n:]) <= {0} and len(ids) == 77


@pytest.mark.parametrize("length", [None, 77, 512])
def test_encoder_equals_transformers(t5, t5_fixture, xl_inputs, length):
    """Unpadded (no mask needed), padded to 77 and to 512 with the mask: ComfyUI's T5 = transformers."""
    model = t5_fixture[1]
    ids = xl_inputs.t5_ids(t5, PROMPT, 512)
    real = ids[: ids.index(1) + 1]
    pad_to = length or len(real)
    got = t5.encode_from_tokens({"t5xl": [[(i, 1.0) for i in real + [0] * (pad_to - len(real))]]}).double()
    ref = _hf(model, real, pad_to)
    assert got.shape == ref.shape
    assert_close_rel(got[:, :len(real)], ref[:, :len(real)], 1e-5, f"T5 vs transformers, padded to {pad_to}")
    if pad_to > len(real):  # pad positions too (the author keeps them)
        assert_close_rel(got, ref, 1e-5, f"T5 vs transformers incl. pads, {pad_to}")


def test_node_states_equal_the_authors_512_padded_encode_on_the_first_77(t5, t5_fixture, xl_inputs):
    states = xl_inputs.t5_states(t5, PROMPT, 512)
    ids = xl_inputs.t5_ids(t5, PROMPT, 512)
    real = ids[: ids.index(1) + 1]
    assert_close_rel(states[:, :77].double(), _hf(t5_fixture[1], real, 512)[:, :77], 1e-5, "first 77 of 512")


def test_long_prompt_is_cut_with_eos_last(t5, xl_inputs):
    long = " ".join(f"word{i}" for i in range(400))
    ids77 = xl_inputs.t5_ids(t5, long, 77)
    ids512 = xl_inputs.t5_ids(t5, long, 512)
    assert len(ids77) == 77 and ids77[-1] == 1 and 0 not in ids77
    assert len(ids512) == 512 and ids512[-1] == 1 and ids512[:76] == ids77[:76]


def test_other_t5_families_are_refused(pack, tmp_path):
    from safetensors.torch import save_file

    from testbed.fixtures.t5_files import build_t5_base

    with pytest.raises(ValueError, match="original T5.*stable_audio"):
        pack.read_encoder(str(build_t5_base()))
    path, model = tiny_flan_t5(tmp_path / "pile", seed=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i in (1, 2):  # umT5 / Pile-T5: a relative bias in every block
        state[f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(32, 4)
    bad = tmp_path / "pile_like.safetensors"
    save_file(state, str(bad))
    with pytest.raises(ValueError, match="Pile-T5"):
        pack.read_encoder(str(bad))


def test_wrong_t5_sockets_are_refused_with_the_fix(comfy, comfy_base, xl_inputs):
    """t5-base (stock Load CLIP, stable_audio) and AuraFlow's Pile-T5 reading of a flan-t5-xl file are refused."""
    from testbed.fixtures.t5_files import build_t5_base

    t5_base = comfy.nodes.CLIPLoader().load_clip(
        place_model(comfy_base, "text_encoders", build_t5_base(), "t5_base_for_xl.safetensors"), type="stable_audio")[0]
    with pytest.raises(ValueError, match="t5-base.*flan-t5-xl.*Load Lyra T5-XL"):
        xl_inputs.check_t5(t5_base, 2048)

    class PileLike:  # what stock Load CLIP returns for a 2048-wide T5 file: clip name pile_t5xl
        def tokenize(self, text, **kw):
            return {"pile_t5xl": [[(1, 1.0)]]}

    with pytest.raises(ValueError, match="Pile-T5.*Load Lyra T5-XL"):
        xl_inputs.check_t5(PileLike(), 2048)
