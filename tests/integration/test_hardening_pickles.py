"""Pickles that would run code are refused over HTTP — Lune ``.pt`` (loader, clip_vae_from, converter) and Lyra
``model.pt`` — whichever callable they use (``builtins.exec``, ``os.system``, ``subprocess.check_call``), wherever
the payload hides (top level, config, two dicts deep inside ``student`` / ``model_state_dict``) and whatever the
container (torch zip, legacy torch pickle, bare pickle, a pickle named ``.safetensors``). The marker file the
payload would create never appears, the message names the refused callable without suggesting
``weights_only=False``, and the server serves the next prompt.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from testbed.fixtures import bad_inputs
from testbed.fixtures import lyra_files
from testbed import graphs
from testbed.env import place_model
from testbed.server import execution_error
from testbed.hardening import describe_failure, succeeded

pytestmark = pytest.mark.comfy

# How torch names the refused global (protocol-2 pickles store subprocess as its Python 2 name, "commands").
CALLABLE_NAMES = {"exec": "exec)", "os_system": "posix.system", "subprocess": "check_call"}

# (case id, payload, place, container, file name)
LUNE_CASES = [
    ("exec_top_zip", "exec", "top", "zip", "evil_exec.pt"),
    ("os_system_cfg_zip", "os_system", "config", "zip", "evil_system.pt"),
    ("subprocess_nested_in_student_zip", "subprocess", "nested_in_weights", "zip", "evil_nested.pt"),
    ("os_system_nested_in_student_legacy", "os_system", "nested_in_weights", "legacy", "evil_legacy.pt"),
    ("subprocess_top_raw_pickle", "subprocess", "top", "raw", "evil_raw.ckpt"),
    ("os_system_named_safetensors", "os_system", "nested_in_weights", "zip", "evil_renamed.safetensors"),
]
LYRA_CASES = [
    ("exec_top_zip", "exec", "top", "zip", "model.pt"),
    ("os_system_config_zip", "os_system", "config", "zip", "model.pt"),
    ("subprocess_nested_in_model_state_dict_zip", "subprocess", "nested_in_weights", "zip", "model.pt"),
    ("os_system_nested_legacy", "os_system", "nested_in_weights", "legacy", "model.pt"),
    ("os_system_named_safetensors", "os_system", "top", "zip", "model.safetensors"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening_pickles")


def _hostile(work: Path, kind: str, case_id: str, payload: str, place: str, fmt: str, filename: str):
    marker = work / f"PWNED-{kind}-{case_id}"
    obj = bad_inputs.hostile_object(kind, bad_inputs.PAYLOADS[payload](marker), place)
    folder = work / f"{kind}-{case_id}"
    path = bad_inputs.write_hostile_pickle(folder / filename, obj, fmt=fmt)
    return path, marker


def _assert_refused(entry: dict, node_type: str, payload: str | None, marker: Path, *needles: str) -> str:
    """``payload=None``: the unpickler stops before the global (a protocol-4 frame), so no callable is named."""
    assert not succeeded(entry), "a hostile pickle was accepted"
    err = execution_error(entry)
    assert err is not None, describe_failure(entry)
    message = err["exception_message"]
    assert err["node_type"] == node_type, message
    for needle in ("refused", *([CALLABLE_NAMES[payload]] if payload else []), *needles):
        assert needle.lower() in message.lower(), f"{needle!r} not in: {message}"
    assert "weights_only` set to `False" not in message and "weights_only=False" not in message, message
    assert not marker.exists(), f"the payload ran: {marker} exists"
    return message


def _recover(server, tiny_models, seed: int) -> None:
    good = server.run(graphs.txt2img(tiny_models["single_file"], steps=1, seed=seed, prefix="hp_recover"))
    assert succeeded(good), describe_failure(good)


@pytest.mark.parametrize("case_id,payload,place,fmt,filename", LUNE_CASES, ids=[c[0] for c in LUNE_CASES])
def test_lune_loader_refuses(comfy_server, comfy_base, tiny_models, work, case_id, payload, place, fmt, filename):
    path, marker = _hostile(work, "lune", case_id, payload, place, fmt, filename)
    name = place_model(comfy_base, "diffusion_models", path, f"hp_{case_id}{path.suffix}")
    entry = comfy_server.run(graphs.txt2img(name, clip_vae_from=tiny_models["single_file"], steps=1, prefix="hp"))
    message = _assert_refused(entry, "LuneModelLoader", None if fmt == "raw" else payload, marker,
                              "nothing from the file was executed")
    print(f"\n[pickles] lune/{case_id}: {message}")
    _recover(comfy_server, tiny_models, seed=zlib.crc32(case_id.encode()) % 1000)
    assert not marker.exists()


def test_lune_clip_vae_from_refuses(comfy_server, comfy_base, tiny_models, work):
    """The CLIP/VAE donor checkpoint goes through the same safe reader."""
    path, marker = _hostile(work, "lune", "donor", "os_system", "nested_in_weights", "zip", "donor.ckpt")
    donor = place_model(comfy_base, "checkpoints", path, "hp_donor.ckpt")
    entry = comfy_server.run(graphs.txt2img(tiny_models["training_state"], clip_vae_from=donor, steps=1, prefix="hp"))
    _assert_refused(entry, "LuneModelLoader", "os_system", marker, "nothing from the file was executed")
    _recover(comfy_server, tiny_models, seed=11)


def test_convert_refuses_and_writes_nothing(comfy_server, comfy_base, tiny_models, work):
    path, marker = _hostile(work, "lune", "convert", "subprocess", "nested_in_weights", "zip", "to_convert.pt")
    name = place_model(comfy_base, "diffusion_models", path.parent, "hp_convert_dir")
    entry = comfy_server.run({"1": {"class_type": "LuneConvertToSafetensors",
                                    "inputs": {"model_name": f"{name}/to_convert.pt"}}})
    _assert_refused(entry, "LuneConvertToSafetensors", "subprocess", marker, "nothing from the file was executed")
    assert sorted(p.name for p in path.parent.iterdir()) == ["to_convert.pt"], "the converter left files behind"
    _recover(comfy_server, tiny_models, seed=12)


@pytest.mark.parametrize("case_id,payload,place,fmt,filename", LYRA_CASES, ids=[c[0] for c in LYRA_CASES])
def test_lyra_loader_refuses(comfy_server, comfy_base, tiny_models, work, case_id, payload, place, fmt, filename):
    path, marker = _hostile(work, "lyra", case_id, payload, place, fmt, filename)
    lyra_files.write_config_json(path.parent / "config.json")
    folder = place_model(comfy_base, "lyra", path.parent, f"hp_lyra_{case_id}")
    entry = comfy_server.run({
        "1": {"class_type": "LyraLoader", "inputs": {"lyra_name": f"{folder}/{filename}"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    })
    message = _assert_refused(entry, "LyraLoader", payload, marker, "Nothing from the file was executed")
    print(f"\n[pickles] lyra/{case_id}: {message}")
    _recover(comfy_server, tiny_models, seed=zlib.crc32(case_id.encode()) % 1000 + 1)
    assert not marker.exists()


def test_no_marker_anywhere(work):
    """After every case above: not one payload ran (markers are unique per case)."""
    assert not list(work.glob("PWNED-*"))
