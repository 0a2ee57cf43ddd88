"""Our converted form (per-component safetensors + config.json): round trip, dtype, strictness, atomic writes."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_A
from toonctl.convert.components import (
    COMPONENT_FILES,
    FORMAT,
    is_converted_dir,
    load_converted,
    read_converted_config,
    save_components,
)
from toonctl.convert.config import load_config
from toonctl.convert.tooncrafter import COMPONENTS, SCHEDULE_KEYS, load_components
from toonctl.errors import CheckpointError, CheckpointMismatchError


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_config):
    """tiny-a converted twice: ``{"fp32": dir, "fp16": dir}``."""
    root = tmp_path_factory.mktemp("converted")
    source = TINY_A / "model.safetensors"
    return {
        "fp32": save_components(source, tiny_config, root / "fp32", dtype=torch.float32),
        "fp16": save_components(source, tiny_config, root / "fp16", dtype=torch.float16),
    }


@pytest.fixture(scope="module")
def reference(tiny_config):
    return load_components(TINY_A / "model.safetensors", tiny_config)


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / src.name)


def test_fp32_round_trip_is_identical_to_the_official_loader(converted, reference):
    loaded = load_converted(converted["fp32"])
    assert set(loaded) == {*COMPONENTS, "schedule"}
    for name in COMPONENTS:
        ours, ref = loaded[name].state_dict(), reference[name].state_dict()
        assert ours.keys() == ref.keys(), name
        for key in ref:
            assert ours[key].dtype == torch.float32
            assert torch.equal(ours[key], ref[key]), f"{name}.{key}"
    assert loaded["schedule"].keys() == reference["schedule"].keys()
    for key, value in reference["schedule"].items():
        assert torch.equal(loaded["schedule"][key], value), key


def test_fp16_halves_the_size_and_loads_as_fp16(converted, reference):
    def network_bytes(directory):
        return sum((directory / COMPONENT_FILES[n]).stat().st_size for n in COMPONENTS)

    ratio = network_bytes(converted["fp16"]) / network_bytes(converted["fp32"])
    assert 0.49 < ratio < 0.52, ratio
    loaded = load_converted(converted["fp16"])
    for name in COMPONENTS:
        ref = reference[name].state_dict()
        for key, value in loaded[name].state_dict().items():
            assert value.dtype == torch.float16, f"{name}.{key}"
            assert torch.equal(value, ref[key].half()), f"{name}.{key}"
    assert all(v.dtype == torch.float32 for v in loaded["schedule"].values())
    upcast = load_converted(converted["fp16"], components=["image_proj"], dtype=torch.float32)
    assert set(upcast) == {"image_proj", "schedule"}
    assert all(p.dtype == torch.float32 for p in upcast["image_proj"].parameters())


def test_config_json_has_the_marker_and_reads_back(converted, tiny_config):
    meta = json.loads((converted["fp16"] / "config.json").read_text())
    assert meta["format"] == FORMAT and meta["dtype"] == "float16"
    assert read_converted_config(converted["fp16"]) == tiny_config
    assert load_config(converted["fp16"] / "config.json") == tiny_config  # the generic reader accepts it too
    assert is_converted_dir(converted["fp16"])
    assert not is_converted_dir(TINY_A)
    assert not is_converted_dir(TINY_A / "model.safetensors")
    assert not is_converted_dir(converted["fp16"] / "missing")


def test_files_hold_local_names_and_get_the_config_mode(converted):
    directory = converted["fp16"]
    assert sorted(p.name for p in directory.iterdir()) == sorted([*COMPONENT_FILES.values(), "config.json"])
    unet_keys = load_file(directory / "unet.safetensors").keys()
    assert "input_blocks.0.0.weight" in unet_keys and not any(k.startswith("model.") for k in unet_keys)
    assert set(load_file(directory / "schedule.safetensors")) <= set(SCHEDULE_KEYS)
    mode = stat.S_IMODE((directory / "config.json").stat().st_mode)
    assert all(stat.S_IMODE((directory / f).stat().st_mode) == mode for f in COMPONENT_FILES.values())


def test_missing_component_file(converted, tmp_path):
    directory = _copy(converted["fp16"], tmp_path)
    (directory / "vae.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: vae\.safetensors missing"):
        load_converted(directory)
    load_converted(directory, components=["image_proj"])  # the other components still load


def _edit(path, change):
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda t: t.pop("latents"), "missing", "image_proj.safetensors: latents"),
        (lambda t: t.update(extra=torch.zeros(1)), "unexpected", "image_proj.safetensors: extra"),
        (lambda t: t.update(latents=torch.zeros(1, 2, 3)), "mismatched", "image_proj.safetensors: latents [1, 2, 3]"),
    ],
)
def test_load_converted_is_strict(converted, tmp_path, change, field, expected):
    directory = _copy(converted["fp16"], tmp_path)
    _edit(directory / "image_proj.safetensors", change)
    with pytest.raises(CheckpointMismatchError) as info:
        load_converted(directory)
    assert any(entry.startswith(expected) for entry in getattr(info.value, field)), getattr(info.value, field)


def test_unexpected_schedule_key(converted, tmp_path):
    directory = _copy(converted["fp16"], tmp_path)
    _edit(directory / "schedule.safetensors", lambda t: t.update(foo=torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match=r"schedule\.safetensors: foo"):
        load_converted(directory, components=["image_proj"])


def test_mismatch_writes_nothing(tmp_path, tiny_config, tiny_state_dict):
    bad = dict(tiny_state_dict)
    bad["image_proj_model.latents"] = torch.zeros(1, 2, 3)
    with pytest.raises(CheckpointMismatchError, match="image_proj_model.latents"):
        save_components(bad, tiny_config, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary directory


def test_existing_directory_needs_overwrite(converted, tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="already exists"):
        save_components(TINY_A / "model.safetensors", tiny_config, converted["fp16"])
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    with pytest.raises(CheckpointError, match="not a converted model"):
        save_components(TINY_A / "model.safetensors", tiny_config, unrelated, overwrite=True)
    assert unrelated.is_dir()


def test_overwrite_and_rebuilt_schedule(tmp_path, tiny_config, tiny_state_dict, converted):
    """Without schedule buffers in the source, the saved schedule is rebuilt from the config."""
    out = _copy(converted["fp16"], tmp_path)
    no_schedule = {k: v for k, v in tiny_state_dict.items() if "." in k}
    save_components(no_schedule, tiny_config, out, dtype=torch.bfloat16, overwrite=True)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # the old copy and the temp dir are gone
    schedule = load_file(out / "schedule.safetensors")
    for key in schedule:
        torch.testing.assert_close(schedule[key], tiny_state_dict[key], atol=1e-6, rtol=1e-5)
