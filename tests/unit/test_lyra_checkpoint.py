"""Unit tests of the Lyra checkpoint reader/writer (docs/reference.md §3, "Files")."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
import torch

import comfyui_lune.lyra.checkpoint as ckpt
from comfyui_lune.lyra import (
    LyraCheckpointError,
    LyraConfig,
    LyraConfigError,
    LyraUnsafeFileError,
    LyraVAE,
    load_lyra,
)
from testbed.fixtures.lyra_files import (
    TINY,
    random_state_dict,
    save_lyra_safetensors,
    spec_shapes,
    tiny_config,
    tiny_shapes,
    trainer_config,
    write_bare_pt,
    write_config_json,
    write_malicious_pickle,
    write_safetensors,
    write_trainer_pt,
    write_truncated,
)

LOGGER = "lune.lyra"


# --------------------------------------------------------------------------- helpers
class LoadSpy:
    """Records the keyword arguments of every torch.load call made by the loader."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        real = torch.load

        def spy(*args, **kwargs):
            self.calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(ckpt.torch, "load", spy)


def _assert_weights_equal(model: LyraVAE, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        assert torch.equal(got[key].cpu(), value.to(got[key].dtype)), key


def _tiny_inputs(b: int = 1, tokens: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"clip": torch.randn(b, tokens, TINY["clip"], generator=g),
            "t5": torch.randn(b, tokens, TINY["t5"], generator=g)}


@pytest.fixture()
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state_dict(tiny_shapes(), seed=1)


# --------------------------------------------------------------------------- full-size trainer file
@pytest.fixture(scope="module")
def full_trainer(tmp_path_factory):
    """The published layout: cuda:0-tagged trainer model.pt with AdamW moments (~205 MB)."""
    folder = tmp_path_factory.mktemp("vae-lyra")
    state = random_state_dict(spec_shapes(), seed=321)
    path = write_trainer_pt(folder / "model.pt", state, trainer_config(), location="cuda:0")
    return folder, path, state


@pytest.mark.slow
def test_fixture_file_resembles_published_model_pt(full_trainer):
    _, path, _ = full_trainer
    size = os.path.getsize(path)
    assert abs(size - 204_947_755) / 204_947_755 < 0.01  # fp32 weights + two AdamW moments


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_plain_torch_load_fails_on_cpu_machine(full_trainer):
    _, path, _ = full_trainer
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)


@pytest.mark.slow
def test_loads_cuda_tagged_trainer_file(full_trainer, monkeypatch, caplog):
    _, path, state = full_trainer
    spy = LoadSpy(monkeypatch)
    caplog.set_level(logging.INFO, logger=LOGGER)
    model = load_lyra(path)
    # mmap so the optimizer moments are mapped, never read; never unpickles code
    assert spy.calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    assert not model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert model.fusion.modality_routes.dtype == torch.int64
    _assert_weights_equal(model, state)
    info = model.load_info
    assert (info.format, info.container, info.global_step, info.epoch) == ("torch-zip", "model_state_dict", 52000, 12)
    assert info.best_loss == pytest.approx(0.0123)
    assert "embedded" in info.config_source
    assert model.config == LyraConfig()
    assert "config embedded in" in caplog.text


@pytest.mark.slow
def test_loads_folder_with_config_json(full_trainer, caplog):
    folder, _, state = full_trainer
    write_config_json(folder / "config.json", trainer_config())
    try:
        caplog.set_level(logging.INFO, logger=LOGGER)
        model = load_lyra(folder)
        assert model.load_info.config_source.startswith(str(folder / "config.json"))
        assert "config.json beside the weights" in caplog.text
        _assert_weights_equal(model, state)
    finally:
        os.unlink(folder / "config.json")


# --------------------------------------------------------------------------- formats (tiny)
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_tiny_cuda_tagged_trainer_file(tmp_path, tiny_state, monkeypatch):
    path = write_trainer_pt(tmp_path / "model.pt", tiny_state, trainer_config(tiny_config()), location="cuda:0")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)  # what a naive CPU loader does
    spy = LoadSpy(monkeypatch)
    model = load_lyra(path)
    assert spy.calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    assert model.load_info.container == "model_state_dict" and model.load_info.global_step == 52000
    _assert_weights_equal(model, tiny_state)


def test_legacy_non_zip_trainer_file_falls_back_to_no_mmap(tmp_path, tiny_state, monkeypatch):
    path = write_trainer_pt(tmp_path / "model.pt", tiny_state, trainer_config(tiny_config()), legacy=True)
    spy = LoadSpy(monkeypatch)
    model = load_lyra(path)
    assert spy.calls == [{"map_location": "cpu", "weights_only": True, "mmap": False}]
    assert model.load_info.format == "torch-legacy"
    _assert_weights_equal(model, tiny_state)


def test_bare_state_dict_pt_with_config_json(tmp_path, tiny_state):
    path = write_bare_pt(tmp_path / "lyra.pt", tiny_state, location="cuda:0")
    write_config_json(tmp_path / "config.json", tiny_config())
    model = load_lyra(path)
    assert model.load_info.container == "bare"
    _assert_weights_equal(model, tiny_state)


def test_safetensors_file(tmp_path, tiny_state):
    write_safetensors(tmp_path / "model.safetensors", tiny_state)
    write_config_json(tmp_path / "config.json", trainer_config(tiny_config()))
    model = load_lyra(tmp_path)
    assert model.load_info.format == "safetensors"
    _assert_weights_equal(model, tiny_state)


def test_folder_prefers_safetensors_over_pt(tmp_path, tiny_state):
    write_trainer_pt(tmp_path / "model.pt", random_state_dict(tiny_shapes(), seed=99), tiny_config())
    write_safetensors(tmp_path / "model.safetensors", tiny_state)
    write_config_json(tmp_path / "config.json", tiny_config())
    model = load_lyra(tmp_path)
    assert model.load_info.path.endswith("model.safetensors")
    _assert_weights_equal(model, tiny_state)


def test_fp16_weights_load_as_fp32(tmp_path):
    half = random_state_dict(tiny_shapes(), seed=2, dtype=torch.float16)
    write_safetensors(tmp_path / "m.safetensors", half)
    model = load_lyra(tmp_path / "m.safetensors", config=tiny_config())
    assert model.fc_mu.weight.dtype == torch.float32
    _assert_weights_equal(model, half)


def test_wrong_extension_is_sniffed(tmp_path, tiny_state, caplog):
    path = write_trainer_pt(tmp_path / "lyra.safetensors", tiny_state, tiny_config())
    caplog.set_level(logging.WARNING, logger=LOGGER)
    model = load_lyra(path)
    assert model.load_info.format == "torch-zip"
    assert "despite the '.safetensors' extension" in caplog.text


def test_wrapper_prefixes_are_stripped(tmp_path, tiny_state):
    wrapped = {f"module._orig_mod.{k}": v for k, v in tiny_state.items()}
    path = write_bare_pt(tmp_path / "w.pt", wrapped)
    model = load_lyra(path, config=tiny_config())
    _assert_weights_equal(model, tiny_state)


def test_save_safetensors_roundtrip_with_embedded_config_and_no_overwrite(tmp_path, tiny_state):
    src = write_trainer_pt(tmp_path / "model.pt", tiny_state, tiny_config(fusion_heads=2))
    model = load_lyra(src)
    assert model.config.fusion_heads == 2
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = save_lyra_safetensors(model, out_dir / "lyra.safetensors")
    again = load_lyra(out)  # no config.json beside it: uses the metadata config
    assert again.config == model.config
    assert "embedded" in again.load_info.config_source
    _assert_weights_equal(again, tiny_state)
    x = _tiny_inputs()
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x)["clip"], again.reconstruct(x)["clip"])

    before = open(out, "rb").read()
    with pytest.raises(LyraCheckpointError, match="refusing to overwrite"):
        save_lyra_safetensors(model, out)
    with pytest.raises(LyraCheckpointError, match="refusing to overwrite"):
        save_lyra_safetensors(model.state_dict(), out, config=model.config)
    assert open(out, "rb").read() == before


# --------------------------------------------------------------------------- config priority
def test_config_priority_explicit_then_beside_then_embedded_then_defaults(tmp_path, tiny_state, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = write_trainer_pt(tmp_path / "model.pt", tiny_state, trainer_config(tiny_config(fusion_heads=4)))
    # embedded only
    assert load_lyra(path).config.fusion_heads == 4
    # config.json beside beats embedded
    write_config_json(tmp_path / "config.json", tiny_config(fusion_heads=2))
    model = load_lyra(path)
    assert model.config.fusion_heads == 2 and "config.json" in model.load_info.config_source
    # <stem>.json beats config.json
    write_config_json(tmp_path / "model.json", tiny_config(fusion_heads=8))
    assert load_lyra(path).config.fusion_heads == 8
    # explicit beats everything (LyraConfig, dict, or path)
    explicit = LyraConfig.from_dict(tiny_config(fusion_heads=1))
    assert load_lyra(path, config=explicit).config.fusion_heads == 1
    assert load_lyra(path, config=tiny_config(fusion_heads=16)).config.fusion_heads == 16
    p = write_config_json(tmp_path / "other.json", tiny_config(fusion_heads=32))
    model = load_lyra(path, config=p)
    assert model.config.fusion_heads == 32 and "explicit" in model.load_info.config_source
    assert "Lyra: loading" in caplog.text


def test_heads_change_outputs_so_config_choice_matters(tmp_path, tiny_state):
    path = write_bare_pt(tmp_path / "m.pt", tiny_state)
    a = load_lyra(path, config=tiny_config(fusion_heads=4))
    b = load_lyra(path, config=tiny_config(fusion_heads=2))
    x = _tiny_inputs()
    with torch.no_grad():
        assert not torch.allclose(a.reconstruct(x)["clip"], b.reconstruct(x)["clip"])


def test_non_lyra_config_json_beside_is_ignored(tmp_path, tiny_state, caplog):
    path = write_trainer_pt(tmp_path / "model.pt", tiny_state, tiny_config())
    write_config_json(tmp_path / "config.json", {"_class_name": "UNet2DConditionModel", "in_channels": 4})
    caplog.set_level(logging.WARNING, logger=LOGGER)
    model = load_lyra(path)
    assert "embedded" in model.load_info.config_source
    assert "has no Lyra settings" in caplog.text


def test_defaults_when_no_config_anywhere(tmp_path):
    state = random_state_dict(tiny_shapes(), seed=3)
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError) as err:
        load_lyra(path)
    msg = str(err.value)
    assert "v1 defaults" in msg and "decoders.clip.0.weight: file [32, 12] vs model [1024, 768]" in msg


def test_rejects_non_cantor_config_json(tmp_path, tiny_state):
    write_trainer_pt(tmp_path / "model.pt", tiny_state, tiny_config())
    cfg_path = write_config_json(tmp_path / "config.json", trainer_config(tiny_config(fusion_strategy="concat")))
    with pytest.raises(LyraConfigError) as err:
        load_lyra(tmp_path)
    msg = str(err.value)
    assert cfg_path in msg and "'concat'" in msg and "only 'cantor'" in msg and "config.json that ships with" in msg


def test_rejects_unreadable_config_json(tmp_path, tiny_state):
    write_trainer_pt(tmp_path / "model.pt", tiny_state, tiny_config())
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(LyraConfigError, match="not readable JSON"):
        load_lyra(tmp_path)


def test_rejects_bad_config_argument_type(tmp_path, tiny_state):
    path = write_bare_pt(tmp_path / "m.pt", tiny_state)
    with pytest.raises(LyraConfigError, match="config must be"):
        load_lyra(path, config=42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- key checks
def test_missing_keys_are_reported_sorted(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["fc_mu.weight"], state["decoders.t5.8.bias"]
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError) as err:
        load_lyra(path, config=tiny_config())
    assert "missing 2 keys [decoders.t5.8.bias, fc_mu.weight]" in str(err.value)
    assert str(path) in str(err.value)


def test_unexpected_keys_are_reported(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["fusion.attention_weights"] = torch.ones(3)
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError, match=r"unexpected 1 keys \[fusion.attention_weights\]"):
        load_lyra(path, config=tiny_config())


def test_long_key_lists_are_truncated(tmp_path, tiny_state):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("decoders.")}
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError, match=r"missing 20 keys \[.*, … and 12 more\]"):
        load_lyra(path, config=tiny_config())


def test_shape_mismatch_is_reported(tmp_path, tiny_state):
    path = write_bare_pt(tmp_path / "m.pt", tiny_state)
    with pytest.raises(LyraCheckpointError) as err:
        load_lyra(path, config=tiny_config(latent_dim=16))
    msg = str(err.value)
    assert "decoders.clip.0.weight: file [32, 12] vs model [32, 16]" in msg and "explicit config" in msg


def test_cross_modal_projections_are_tolerated(tmp_path, tiny_state, caplog):
    state = dict(tiny_state)
    for name, dim in (("clip", TINY["clip"]), ("t5", TINY["t5"])):
        state[f"cross_modal_projections.{name}.weight"] = torch.randn(dim, dim)
        state[f"cross_modal_projections.{name}.bias"] = torch.randn(dim)
    path = write_trainer_pt(tmp_path / "model.pt", state, tiny_config())
    caplog.set_level(logging.INFO, logger=LOGGER)
    model = load_lyra(path)
    assert len(model.load_info.dropped_keys) == 4
    assert "cross_modal_projections" in caplog.text
    _assert_weights_equal(model, tiny_state)


def test_invalid_routes_are_rejected(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["fusion.modality_routes"] = torch.tensor([[0, 5], [1, 0]])
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError, match="modality_routes contains indices outside"):
        load_lyra(path, config=tiny_config())


def test_nonfinite_weights_are_rejected(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["encoder.4.weight"] = state["encoder.4.weight"].clone()
    state["encoder.4.weight"][0, 0] = float("nan")
    path = write_bare_pt(tmp_path / "m.pt", state)
    with pytest.raises(LyraCheckpointError, match=r"\[encoder.4.weight\] contain NaN"):
        load_lyra(path, config=tiny_config())


def test_trainer_dict_without_weights_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"optimizer_state_dict": {}, "global_step": 3}, path)
    with pytest.raises(LyraCheckpointError, match=r"top-level entries \[global_step, optimizer_state_dict\]"):
        load_lyra(path)


# --------------------------------------------------------------------------- unsafe / corrupt
@pytest.mark.parametrize("fmt", ["zip", "raw"])
def test_unsafe_pickle_is_refused_and_never_executed(tmp_path, tiny_state, fmt):
    marker = tmp_path / "PWNED"
    path = write_malicious_pickle(tmp_path / "model.pt", marker, fmt=fmt, state=tiny_state)
    with pytest.raises(LyraUnsafeFileError) as err:
        load_lyra(path, config=tiny_config())
    msg = str(err.value)
    assert str(path) in msg and "run code" in msg and "Nothing from the file was executed" in msg
    assert "open" in msg  # names the refused callable (posix.open / nt.open)
    assert not marker.exists()


def test_malicious_fixture_is_a_real_threat(tmp_path):
    """Sanity check of the fixture: plain pickle *would* create the marker."""
    marker = tmp_path / "proof"
    path = write_malicious_pickle(tmp_path / "evil.pkl", marker, fmt="raw")
    with open(path, "rb") as fh:
        obj = pickle.load(fh)  # our own harmless payload: opens (creates) the marker file
    os.close(obj["model_state_dict"])
    assert marker.exists()


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_zip_is_a_checkpoint_error(tmp_path, tiny_state, fraction):
    good = write_trainer_pt(tmp_path / "good.pt", tiny_state, tiny_config())
    bad = write_truncated(good, tmp_path / "model.pt", fraction)
    with pytest.raises(LyraCheckpointError) as err:
        load_lyra(bad)
    assert not isinstance(err.value, LyraUnsafeFileError)
    assert str(bad) in str(err.value) and "truncated or corrupt" in str(err.value)


def test_truncated_legacy_file_is_a_checkpoint_error(tmp_path, tiny_state):
    good = write_trainer_pt(tmp_path / "good.pt", tiny_state, tiny_config(), legacy=True)
    bad = write_truncated(good, tmp_path / "model.pt", 0.6)
    with pytest.raises(LyraCheckpointError, match="model.pt"):
        load_lyra(bad, config=tiny_config())


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path, tiny_state):
    good = write_safetensors(tmp_path / "good.safetensors", tiny_state)
    bad = write_truncated(good, tmp_path / "model.safetensors", 0.7)
    with pytest.raises(LyraCheckpointError, match=r"model\.safetensors could not be read as safetensors"):
        load_lyra(bad, config=tiny_config())


def test_empty_and_junk_files(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(LyraCheckpointError, match="empty"):
        load_lyra(empty)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    with pytest.raises(LyraCheckpointError, match="not a checkpoint format"):
        load_lyra(junk)


def test_missing_path_and_bad_folders(tmp_path, tiny_state):
    with pytest.raises(LyraCheckpointError, match="not found"):
        load_lyra(tmp_path / "nope.pt")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(LyraCheckpointError, match="No Lyra weights in folder"):
        load_lyra(empty_dir)
    two = tmp_path / "two"
    two.mkdir()
    write_bare_pt(two / "a.pt", tiny_state)
    write_bare_pt(two / "b.pt", tiny_state)
    with pytest.raises(LyraCheckpointError, match=r"several checkpoint files \[a.pt, b.pt\]"):
        load_lyra(two)
    one = tmp_path / "one"
    one.mkdir()
    write_bare_pt(one / "lyra_v1.pt", tiny_state)
    with open(one / "config.json", "w") as fh:
        json.dump(tiny_config(), fh)
    assert load_lyra(one).load_info.path.endswith("lyra_v1.pt")
