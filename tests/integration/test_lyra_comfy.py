"""Lyra in the real ComfyUI: LyraLoader + CLIPLoader(stable_audio) t5-base + LyraEncode → KSampler → PNG,
the numbers the node produces, and every bad input giving a clear error while the next prompt still runs."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from testbed.fixtures import lyra_files
from testbed.fixtures.t5_files import build_t5_base
from testbed.env import comfyui_path, place_model
from tests.numerics import RTOL_FP32, assert_close_rel

pytestmark = pytest.mark.comfy

PROMPT = "a watercolor painting of a (lighthouse:1.2) on a cliff at dusk, soft light"
LONG_PROMPT = ", ".join(f"detail number {i} of a very long prompt" for i in range(30))  # > 77 CLIP tokens
LYRA_NAME = "lyra_test/model.pt"


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def lyra_folder(tmp_path_factory) -> Path:
    """A published-format trainer model.pt (full size, cuda:0-tagged storages) + config.json."""
    folder = tmp_path_factory.mktemp("lyra_fixture")
    lyra_files.write_trainer_pt(folder / "model.pt", lyra_files.random_state_dict(seed=3))
    lyra_files.write_config_json(folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def names(comfy, comfy_base, tiny_models, lyra_folder) -> dict:
    t5 = place_model(comfy_base, "text_encoders", build_t5_base(), "t5_base_random.safetensors")
    t5xxl = place_model(comfy_base, "text_encoders", build_t5_base(width=4096), "t5xxl_lookalike.safetensors")
    place_model(comfy_base, "lyra", lyra_folder, "lyra_test")
    return {"ckpt": tiny_models["single_file"], "t5": t5, "t5xxl": t5xxl, "lyra": LYRA_NAME}


@pytest.fixture(scope="module")
def pack(comfy):
    """The pack's nodes/lyra_nodes.py module as ComfyUI imported it (same LyraVAE class as the loader returns)."""
    return sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncode"].__module__]


@pytest.fixture(scope="module")
def inputs(pack):
    """The pack's nodes/lyra_inputs.py (T5 tokens and states as Lyra Encode computes them)."""
    return pack.lyra_inputs


def transform(pack, lyra, *args, **kw):
    """What Lyra Encode does with the loaded LYRA (a ModelPatcher around the LyraVAE) after the CLIP/T5 encodes."""
    return pack.transform_conditioning(pack.lyra_model.ready(lyra), *args, **kw)


@pytest.fixture(scope="module")
def parts(comfy, names):
    n = comfy.nodes
    clip = n.CheckpointLoaderSimple().load_checkpoint(names["ckpt"])[1]
    t5 = n.CLIPLoader().load_clip(names["t5"], type="stable_audio")[0]
    lyra = n.NODE_CLASS_MAPPINGS["LyraLoader"]().load(names["lyra"])[0]
    return clip, t5, lyra


@pytest.fixture(scope="module")
def plain(comfy, parts):
    """CLIPTextEncode(text) on the test CLIP, memoised (CPU encodes are the slow part of this file)."""
    memo: dict[str, list] = {}

    def get(text: str) -> list:
        if text not in memo:
            memo[text] = comfy.nodes.CLIPTextEncode().encode(parts[0], text)[0]
        return memo[text]

    return get


def encode(comfy, parts, text=PROMPT, **kw):
    clip, t5, lyra = parts
    return comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncode"]().encode(clip, t5, lyra, text, **kw)[0]


def lyra_graph(names, *, t5=None, lyra=None, clip_from="ckpt", positive=PROMPT, negative="", batch=1,
               prefix="lyra", strength=1.0) -> dict:
    g = {
        "1": {"class_type": "LuneModelLoader", "inputs": {"model_name": names["ckpt"], "variant": "lune-flux",
                                                          "shift": 2.0, "clip_vae_from": "(from model file)"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": t5 or names["t5"], "type": "stable_audio"}},
        "3": {"class_type": "LyraLoader", "inputs": {"lyra_name": lyra or names["lyra"]}},
        "4": {"class_type": "LyraEncode", "inputs": {"clip": ["1", 1], "t5": ["2", 0], "lyra": ["3", 0],
                                                     "text": positive, "mode": "mean", "seed": 0,
                                                     "strength": strength}},
        "5": {"class_type": "LyraEncode", "inputs": {"clip": ["1", 1], "t5": ["2", 0], "lyra": ["3", 0],
                                                     "text": negative, "mode": "mean", "seed": 0,
                                                     "strength": strength}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 0, "steps": 4, "cfg": 7.5,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }
    if clip_from != "ckpt":
        g["10"] = clip_from
        for node in ("4", "5"):
            g[node]["inputs"]["clip"] = ["10", 0]
    return g


def probe_graph(names, **kw) -> dict:
    """Loaders → LyraEncode ×2 → PreviewAny: the Lyra part of ``lyra_graph`` without sampling (fast)."""
    g = lyra_graph(names, **kw)
    for node in ("6", "7", "8", "9"):
        del g[node]
    g["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    g["12"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}
    return g


def expect_error_then_recover(comfy, names, graph, *needles) -> str:
    result = comfy.run(graph)
    assert not result.ok, "the bad prompt must fail"
    message = result.error_message()
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in: {message}"
    good = comfy.run(probe_graph(names))
    assert good.ok, good.error_message()
    return message


# ------------------------------------------------------------------------------------------------ graph

def test_lyra_graph_writes_png(comfy, names):
    result = comfy.run(lyra_graph(names, batch=2, prefix="lyra_graph"))
    assert result.ok, result.error_message()
    files = comfy.output_files(result)
    assert len(files) == 2 and all(f.is_file() and f.stat().st_size > 0 for f in files)


# ------------------------------------------------------------------------------------------------ numbers

def test_strength_zero_is_clip_text_encode_bit_for_bit(comfy, parts, plain):
    for text in (PROMPT, ""):
        ours = encode(comfy, parts, text, strength=0.0)
        ref = plain(text)
        assert len(ours) == len(ref) == 1
        assert torch.equal(ours[0][0], ref[0][0])
        assert ours[0][1].keys() == ref[0][1].keys()
        assert torch.equal(ours[0][1]["pooled_output"], ref[0][1]["pooled_output"])


@functools.lru_cache(maxsize=1)
def _hf_tokenizer():
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(comfyui_path() / "comfy" / "text_encoders" / "t5_tokenizer"))


def _hf_tokens(text: str) -> dict:
    """The author's call: t5_tokenizer([text], max_length=77, padding="max_length", truncation=True)."""
    return _hf_tokenizer()([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")


@functools.lru_cache(maxsize=1)
def _hf_t5_encoder():
    """transformers' T5EncoderModel (t5-base config) holding the fixture's weights (fp16 → fp32, as ComfyUI
    computes)."""
    from safetensors.torch import load_file
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
                   layer_norm_epsilon=1e-6, dropout_rate=0.0)
    with torch.device("meta"):  # no random init of 110 M params: every tensor comes from the file
        model = T5EncoderModel(cfg)
    state = {k: v.float() for k, v in load_file(str(build_t5_base())).items()}
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    assert not missing and not unexpected, (missing, unexpected)
    assert not any(t.is_meta for t in model.state_dict().values())
    return model.eval()


def test_t5_input_is_the_authors_77_token_t5_base_state(comfy, parts, inputs):
    """Lyra's T5 input = HF T5EncoderModel(**tokenizer(text, padding="max_length", max_length=77,
    truncation=True)).last_hidden_state, as in the author's lyra_inference.py (pads attention-masked, not zeroed)."""
    t5 = parts[1]
    model = _hf_t5_encoder()
    for text in ("a photo of a cat", "", LONG_PROMPT):
        enc = _hf_tokens(text)
        assert inputs.t5_token_ids(t5, text) == enc["input_ids"][0].tolist(), text
        with torch.no_grad():
            ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        ours = inputs.t5_hidden_states(t5, text)
        assert ours.shape == (1, 77, 768) and ours.dtype == torch.float32
        assert_close_rel(ours, ref, RTOL_FP32, what=f"T5 hidden states vs transformers ({text[:20]!r})")
        assert ours[0, -1].abs().sum() > 0, "pad positions must be real hidden states, not zeroed"
    # weighting syntax and embedding references never reach T5; escaped parentheses stay literal
    weighted = inputs.t5_token_ids(t5, "(a photo:1.3) of a \\(cat\\) embedding:foo")
    assert weighted == _hf_tokens("a photo of a (cat)")["input_ids"][0].tolist()


def test_strength_one_is_the_lyra_reconstruction(comfy, parts, pack, inputs, plain):
    clip, t5, lyra = parts
    cond = plain(PROMPT)[0][0]
    t5_hidden = inputs.t5_hidden_states(t5, PROMPT)
    with torch.no_grad():
        recon = lyra.model.reconstruct({"clip": cond.float(), "t5": t5_hidden}, mode="mean")["clip"]
    ours = encode(comfy, parts, PROMPT, strength=1.0)
    assert torch.equal(ours[0][0], recon.to(cond.dtype))
    assert ours[0][0].dtype == cond.dtype and ours[0][0].device == cond.device
    assert not torch.equal(ours[0][0], cond)
    assert torch.equal(ours[0][1]["pooled_output"], plain(PROMPT)[0][1]["pooled_output"])
    half = transform(pack, lyra, cond, t5_hidden, strength=0.5)
    assert_close_rel(half, cond + 0.5 * (recon - cond), RTOL_FP32, what="strength 0.5 blend")


def test_mean_is_deterministic_sample_is_seeded(comfy, parts, pack, inputs, plain):
    _, t5, lyra = parts
    cond = plain(PROMPT)[0][0]
    t5_hidden = inputs.t5_hidden_states(t5, PROMPT)
    a = encode(comfy, parts, mode="mean", seed=1)[0][0]
    b = transform(pack, lyra, cond, t5_hidden, mode="mean", seed=2)
    assert torch.equal(a, b)
    s1 = encode(comfy, parts, mode="sample", seed=7)[0][0]
    s1_again = transform(pack, lyra, cond, t5_hidden, mode="sample", seed=7)
    s2 = transform(pack, lyra, cond, t5_hidden, mode="sample", seed=8)
    assert torch.equal(s1, s1_again)
    assert not torch.equal(s1, s2) and not torch.equal(s1, a)
    assert torch.isfinite(s1).all()


def test_long_prompt_transforms_chunk_zero_only(comfy, parts, plain):
    ref = plain(LONG_PROMPT)[0][0]
    assert ref.shape[1] >= 154
    ours = encode(comfy, parts, LONG_PROMPT)[0][0]
    assert ours.shape == ref.shape
    assert torch.equal(ours[:, 77:], ref[:, 77:])
    assert not torch.equal(ours[:, :77], ref[:, :77])


def test_empty_prompt_and_batches(comfy, parts, pack, inputs, plain):
    _, t5, lyra = parts
    empty = encode(comfy, parts, "")
    assert empty[0][0].shape == (1, 77, 768) and torch.isfinite(empty[0][0]).all()
    assert "pooled_output" in empty[0][1]
    # a batch of CLIP conditionings shares the T5 states and matches row-by-row processing
    c1, c2 = plain(PROMPT)[0][0], plain("")[0][0]
    t5_hidden = inputs.t5_hidden_states(t5, PROMPT)
    both = transform(pack, lyra, torch.cat([c1, c2]), t5_hidden)
    assert_close_rel(both[0:1], transform(pack, lyra, c1, t5_hidden), RTOL_FP32, what="batch row 0 vs alone")
    assert_close_rel(both[1:2], transform(pack, lyra, c2, t5_hidden), RTOL_FP32, what="batch row 1 vs alone")


def test_loader_restamps_replaced_file(comfy, names, lyra_folder):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"]
    assert LYRA_NAME in cls.INPUT_TYPES()["required"]["lyra_name"][0]
    before = cls.IS_CHANGED(LYRA_NAME)
    st = os.stat(lyra_folder / "config.json")
    os.utime(lyra_folder / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cls.IS_CHANGED(LYRA_NAME) != before
    vae = cls().load(LYRA_NAME, device="cpu")[0].model
    assert next(vae.parameters()).dtype == torch.float32 and not vae.training


def test_loader_reloads_a_cp_p_replacement(comfy, comfy_base, lyra_folder, tmp_path):
    """``cp -p new/model.pt models/lyra/...``: same size and mtime as the old file, so only inode/ctime tell.
    The stamp (IS_CHANGED) must change, in place and by rename, and the reload must read the new weights."""
    import shutil
    import time

    def weights(seed: int, where: str) -> Path:  # same name, same layout → same size, other values
        path = tmp_path / where / "model.pt"
        path.parent.mkdir()
        lyra_files.write_trainer_pt(path, lyra_files.random_state_dict(seed=seed), optimizer=False)
        return path

    folder = tmp_path / "lyra_cpp"
    folder.mkdir()
    shutil.copy2(lyra_folder / "config.json", folder / "config.json")
    shutil.move(weights(3, "orig"), folder / "model.pt")
    new, third = weights(4, "new"), weights(5, "third")
    name = place_model(comfy_base, "lyra", folder, "lyra_cpp") + "/model.pt"
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"]
    old = os.stat(folder / "model.pt")
    assert new.stat().st_size == third.stat().st_size == old.st_size
    first = cls().load(name, device="cpu")[0].model

    def cp_p(src, dst):
        shutil.copy2(src, dst)
        os.utime(dst, ns=(old.st_atime_ns, old.st_mtime_ns))

    before = cls.IS_CHANGED(name)
    time.sleep(0.05)  # a replacement comes later than the original (and past the kernel's coarse ctime tick)
    cp_p(new, folder / "model.pt")  # in place: same inode
    st = os.stat(folder / "model.pt")
    assert (st.st_size, st.st_mtime_ns, st.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    in_place = cls.IS_CHANGED(name)
    assert in_place != before
    second = cls().load(name, device="cpu")[0].model
    assert not torch.equal(second.fc_mu.weight, first.fc_mu.weight), "the reload must read the replaced file"
    cp_p(third, tmp_path / "staged.pt")  # by rename: a new inode
    os.replace(tmp_path / "staged.pt", folder / "model.pt")
    assert cls.IS_CHANGED(name) not in (before, in_place)


def test_lyra_is_managed_by_comfyui_like_a_text_encoder(comfy, parts):
    """LYRA is a ModelPatcher (load device = text-encoder device, offload device = text-encoder offload device):
    Lyra Encode loads it through load_models_gpu, ComfyUI can unload it, and it encodes again afterwards, fp32."""
    from comfy import model_management, model_patcher

    _, _, lyra = parts
    assert isinstance(lyra, model_patcher.ModelPatcher)
    assert type(lyra.model).__name__ == "LyraVAE"
    assert lyra.load_device == model_management.text_encoder_device()
    assert lyra.offload_device == model_management.text_encoder_offload_device()
    model_management.unload_all_models()
    assert not any(m is lyra for m in model_management.loaded_models())
    first = encode(comfy, parts, PROMPT)[0][0]
    assert any(m is lyra for m in model_management.loaded_models()), "Lyra Encode must load LYRA via ComfyUI"
    assert all(p.dtype == torch.float32 for p in lyra.model.parameters())
    model_management.unload_all_models()
    assert not any(m is lyra for m in model_management.loaded_models())
    assert torch.equal(encode(comfy, parts, PROMPT)[0][0], first)


# ------------------------------------------------------------------------------------------------ bad input

def test_t5_xxl_is_refused_with_the_fix(comfy, names):
    msg = expect_error_then_recover(comfy, names, probe_graph(names, t5=names["t5xxl"]),
                                    "T5-XXL", "t5-base", "CLIPLoader type stable_audio")
    assert "4096" in msg


def test_sdxl_clip_is_refused(comfy, comfy_base, names, tmp_path):
    """A real SDXL CLIP object (DualCLIPLoader type sdxl) from two look-alike files: refused before encoding."""
    from safetensors.torch import save_file

    clip_l = tmp_path / "clip_l_lookalike.safetensors"
    clip_g = tmp_path / "clip_g_lookalike.safetensors"
    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(3072, 768, dtype=torch.float16)}, clip_l)
    save_file({"text_model.encoder.layers.30.mlp.fc1.weight": torch.zeros(5120, 1280, dtype=torch.float16)}, clip_g)
    l_name = place_model(comfy_base, "text_encoders", clip_l)
    g_name = place_model(comfy_base, "text_encoders", clip_g)
    dual = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": l_name, "clip_name2": g_name, "type": "sdxl"}}
    expect_error_then_recover(comfy, names, probe_graph(names, clip_from=dual),
                              "SDXL", "SD1.5 CLIP-L")


def test_2048_wide_clip_output_is_refused(comfy, parts, pack):
    """Glue unit test (not a real SDXL CLIP): a CLIP whose tokens look SD1.5 but whose output is 2048 wide."""
    clip, t5, lyra = parts

    class WideClip:
        layer_idx = None

        def tokenize(self, text, **kw):
            return {"l": clip.tokenize(text)["l"]}

        def encode_from_tokens_scheduled(self, tokens):
            return [[torch.zeros(1, 77, 2048), {"pooled_output": torch.zeros(1, 1280)}]]

    with pytest.raises(ValueError, match="2048 wide"):
        pack.LyraEncode().encode(WideClip(), t5, lyra, PROMPT)


def test_t5_in_clip_socket_and_clip_in_t5_socket(comfy, parts, pack):
    clip, t5, lyra = parts
    with pytest.raises(ValueError, match="clip is t5-base"):
        pack.LyraEncode().encode(t5, t5, lyra, PROMPT)
    with pytest.raises(ValueError, match="stable_audio"):
        pack.LyraEncode().encode(clip, clip, lyra, PROMPT)


def test_non_lyra_object_is_refused(comfy, parts, pack):
    clip, t5, _ = parts
    with pytest.raises(ValueError, match="not a Lyra model"):
        pack.LyraEncode().encode(clip, t5, torch.nn.Linear(2, 2), PROMPT)


def test_other_fusion_strategy_is_refused(comfy, comfy_base, names, lyra_folder, tmp_path):
    folder = tmp_path / "lyra_v2"
    folder.mkdir()
    os.symlink(lyra_folder / "model.pt", folder / "model.pt")
    v2_config = lyra_files.trainer_config({"fusion_strategy": "adaptive_cantor"})
    lyra_files.write_config_json(folder / "config.json", v2_config)
    place_model(comfy_base, "lyra", folder, "lyra_v2")
    expect_error_then_recover(comfy, names, probe_graph(names, lyra="lyra_v2/model.pt"),
                              "fusion_strategy", "adaptive_cantor", "only 'cantor'")


def test_pickle_that_would_run_code_is_refused(comfy, comfy_base, names, tmp_path):
    folder = tmp_path / "lyra_evil"
    folder.mkdir()
    marker = tmp_path / "pwned.txt"
    lyra_files.write_malicious_pickle(folder / "model.pt", marker)
    lyra_files.write_config_json(folder / "config.json")
    place_model(comfy_base, "lyra", folder, "lyra_evil")
    expect_error_then_recover(comfy, names, probe_graph(names, lyra="lyra_evil/model.pt"),
                              "refused", "Nothing from the file was executed")
    assert not marker.exists(), "the pickle payload ran"


def test_missing_file(comfy, names, pack):
    with pytest.raises(ValueError, match="not found in models/lyra"):
        pack.LyraLoader().load("gone/model.pt")
    result = comfy.run(probe_graph(names, lyra="gone/model.pt"))
    assert not result.ok and "lyra_name" in result.error_message()
    assert comfy.run(probe_graph(names)).ok


def test_download_entry_offline_then_from_local_folder(comfy, comfy_base, names, lyra_folder, pack, tmp_path,
                                                       monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    local = Path(pack.paths.download_root(pack.paths.LYRA_ENTRY.repo, pack.paths.LYRA_FOLDER))
    assert not local.exists()
    entry = pack.DOWNLOAD_ENTRY
    assert entry in comfy.nodes.NODE_CLASS_MAPPINGS["LyraLoader"].INPUT_TYPES()["required"]["lyra_name"][0]
    expect_error_then_recover(comfy, names, probe_graph(names, lyra=entry),
                              "AbstractPhil/vae-lyra", "offline", "AbstractPhil_vae-lyra")
    # a previous download in models/lyra/AbstractPhil_vae-lyra/ is used without the network
    local.mkdir(parents=True)
    try:
        for name in ("model.pt", "config.json"):
            os.symlink(lyra_folder / name, local / name)
        result = comfy.run(probe_graph(names, lyra=entry))
        assert result.ok, result.error_message()
    finally:
        for name in ("model.pt", "config.json"):
            (local / name).unlink(missing_ok=True)
        local.rmdir()


def test_clip_skip_warns(comfy, parts):
    clip, t5, lyra = parts
    skipped = comfy.nodes.CLIPSetLastLayer().set_last_layer(clip, -2)[0]
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("lune.lyra")
    logger.addHandler(handler)
    try:
        out = comfy.nodes.NODE_CLASS_MAPPINGS["LyraEncode"]().encode(skipped, t5, lyra, PROMPT)[0]
    finally:
        logger.removeHandler(handler)
    assert torch.isfinite(out[0][0]).all()
    assert any("clip-skip" in r.getMessage() for r in records)
