"""Checkpoint loading: the full-size key list, both file formats, strictness and safety."""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import FIXTURES, TINY_A
from toonctl.convert.tooncrafter import (
    COMPONENTS,
    SCHEDULE_KEYS,
    build_empty,
    load_components,
    read_state_dict,
    split_state_dict,
)
from toonctl.errors import CheckpointError, CheckpointMismatchError
from toonctl.models.configs import ToonCrafterConfig


def _full_size_key_list() -> list[dict]:
    with open(FIXTURES / "tooncrafter-512-keys.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _shape(text: str) -> tuple[int, ...]:
    return () if text == "scalar" else tuple(int(s) for s in text.split("x"))


def test_full_size_architecture_matches_every_official_key():
    rows = _full_size_key_list()
    assert len(rows) == 2668
    config = ToonCrafterConfig()
    ours: dict[str, tuple[int, ...]] = {}
    for name, comp in COMPONENTS.items():
        module = build_empty(config, name)
        assert all(t.is_meta for t in module.state_dict(keep_vars=True).values()), name  # no memory, no time
        ours.update({comp.prefix + k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()})
    used = {r["key"]: _shape(r["shape"]) for r in rows if r["used_at_inference"] == "yes"}
    never_used = {r["key"] for r in rows if r["used_at_inference"] != "yes"}
    assert len(never_used) == 32
    schedule = {k: v for k, v in used.items() if k in SCHEDULE_KEYS}
    assert set(schedule) == set(SCHEDULE_KEYS)
    network_keys = {k: v for k, v in used.items() if k not in SCHEDULE_KEYS}
    assert set(ours) == set(network_keys), (
        f"missing: {sorted(set(network_keys) - set(ours))[:10]}, extra: {sorted(set(ours) - set(network_keys))[:10]}"
    )
    wrong = [k for k in network_keys if ours[k] != network_keys[k]]
    assert not wrong, wrong[:10]
    # Every key of the list is accepted by the strict splitter; the never-used ones are dropped.
    fake = {r["key"]: torch.empty(_shape(r["shape"]), device="meta") for r in rows}
    plan = split_state_dict(fake, config)
    assigned = {official for keys in plan.values() for official in keys.values()}
    assert assigned == set(used)
    assert not assigned & never_used


def test_full_size_parameter_counts():
    config = ToonCrafterConfig()
    counts = {name: sum(p.numel() for p in build_empty(config, name).parameters()) for name in COMPONENTS}
    assert counts["unet"] == 1_438_854_980
    assert counts["vae"] == 99_941_907 - 20  # post_quant_conv (20 params) is never used and not built
    assert counts["image_proj"] == 48_787_456


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_state_dict):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": tiny_state_dict}, path)
    return path


def test_ckpt_and_safetensors_load_the_same_weights(tiny_config, tiny_ckpt):
    from_st = load_components(TINY_A / "model.safetensors", tiny_config)
    from_ckpt = load_components(tiny_ckpt, tiny_config)
    for name in COMPONENTS:
        a, b = from_st[name].state_dict(), from_ckpt[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for k in from_st["schedule"]:
        assert torch.equal(from_st["schedule"][k], from_ckpt["schedule"][k])
    assert not any(p.is_meta for p in from_st["unet"].parameters())


def test_deepspeed_layout_is_accepted(tmp_path, tiny_state_dict, tiny_config):
    path = tmp_path / "ds.ckpt"
    torch.save({"module": {"_forward_module." + k: v for k, v in tiny_state_dict.items()}}, path)
    loaded = load_components(path, tiny_config, components=["image_proj"])
    assert set(loaded) == {"image_proj", "schedule"}


def test_dtype_and_subset(tiny_config):
    loaded = load_components(TINY_A / "model.safetensors", tiny_config, components=["vae"], dtype=torch.bfloat16)
    assert {p.dtype for p in loaded["vae"].parameters()} == {torch.bfloat16}
    assert loaded["schedule"]["alphas_cumprod"].dtype == torch.float32


def _save(tmp_path, sd, name="model.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


def test_missing_key_is_named(tmp_path, tiny_state_dict, tiny_config):
    sd = dict(tiny_state_dict)
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"model\.diffusion_model\.out\.2\.weight") as info:
        load_components(_save(tmp_path, sd), tiny_config)
    assert info.value.missing == ["model.diffusion_model.out.2.weight"]


def test_unexpected_key_is_named(tmp_path, tiny_state_dict, tiny_config):
    sd = dict(tiny_state_dict)
    sd["model.diffusion_model.extra.weight"] = torch.zeros(2)
    sd["cond_stage_model.model.visual.conv1.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatchError) as info:
        load_components(_save(tmp_path, sd), tiny_config)
    assert "model.diffusion_model.extra.weight" in info.value.unexpected
    assert "cond_stage_model.model.visual.conv1.weight" in info.value.unexpected


def test_wrong_shape_is_named(tmp_path, tiny_state_dict, tiny_config):
    sd = dict(tiny_state_dict)
    sd["image_proj_model.latents"] = torch.zeros(1, 8, 16)
    with pytest.raises(CheckpointMismatchError, match=r"image_proj_model\.latents \[1, 8, 16\]"):
        load_components(_save(tmp_path, sd), tiny_config)


def test_never_used_keys_may_be_absent_or_present(tmp_path, tiny_state_dict, tiny_config):
    sd = {k: v for k, v in tiny_state_dict.items() if not k.startswith("first_stage_model.post_quant_conv")}
    load_components(_save(tmp_path, sd), tiny_config, components=["vae"])


def test_stable_diffusion_checkpoint_is_refused(tmp_path, tiny_config):
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(512, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(4, 4),
    }
    with pytest.raises(CheckpointMismatchError, match="not part of a ToonCrafter model"):
        load_components(_save(tmp_path, sd), tiny_config)


def test_truncated_files_are_reported(tmp_path, tiny_ckpt):
    data = tiny_ckpt.read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        read_state_dict(bad)
    st = (TINY_A / "model.safetensors").read_bytes()
    bad_st = tmp_path / "truncated.safetensors"
    bad_st.write_bytes(st[:1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(bad_st)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.ckpt")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_code_is_never_executed(tmp_path, capfd, writer):
    path = tmp_path / "evil.ckpt"
    if writer == "torch.save":
        torch.save({"state_dict": {"x": _Evil()}}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {"x": _Evil()}}, f)
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    captured = capfd.readouterr()
    assert "pickled code ran" not in captured.out
    # The one line says what was refused, without torch's advice to load it unsafely.
    message = str(error.value)
    assert "refused by the tensors-only loader" in message or "pickled Python object (print)" in message
    assert "weights_only" not in message and "\x1b" not in message and "re-download" not in (error.value.hint or "")
    assert "Detected pickle protocol" not in captured.err  # torch's two-line warning is silenced


def test_loading_does_not_import_torch_dynamo():
    """Building the empty modules must not touch torch's decomposition path: on the meta device an
    ``nn.init.normal_`` imports torch._dynamo, two seconds on every CLI run."""
    script = (
        "import sys\n"
        "from toonctl.pipelines.interpolate import InterpolationPipeline\n"
        f"InterpolationPipeline.from_checkpoint({str(TINY_A / 'model.safetensors')!r},"
        f" config={str(TINY_A / 'config.yaml')!r}, device='cpu')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
