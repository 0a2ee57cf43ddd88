"""LoRA: adapters train alone, save to a small file, and merge into a plain UNet at load (``--lora``)."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import load_tiny_pipe, load_tiny_unet, tiny_batch, tiny_draws

from conftest import assert_rel_close

pytest.importorskip("peft")


def unet_probe(unet, seed: int = 0) -> torch.Tensor:
    """The UNet's v prediction on fixed random inputs (8 frames, 4x8 latents)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, 8, 4, 8, generator=gen)
    context = torch.randn(1, 77 + 16 * 8, cfg.context_dim, generator=gen)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), context, fs=torch.tensor([8]))


def train_adapter(spec, steps: int = 3):
    """A tiny pipeline whose UNet carries LoRA adapters trained for a few steps."""
    from toonctl.training.lora import add_lora
    from toonctl.training.objective import interpolation_loss

    pipe = load_tiny_pipe()
    pipe.image_proj.requires_grad_(False)
    add_lora(pipe.unet, spec)
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    batch = tiny_batch()
    for step in range(steps):
        loss = interpolation_loss(pipe, batch, tiny_draws(batch, seed=step)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return pipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from toonctl.training.lora import save_lora_adapter
    from toonctl.training.trainable import LoraSpec

    spec = LoraSpec(rank=4, alpha=8.0)
    base_state = {k: v.clone() for k, v in load_tiny_unet().state_dict().items()}
    pipe = train_adapter(spec)
    path = save_lora_adapter(pipe.unet, tmp_path_factory.mktemp("lora") / "style.safetensors", spec)
    return pipe, path, spec, base_state


def test_only_adapters_train_and_base_weights_stay(trained):
    from toonctl.training.trainable import official_key

    pipe, _, _, base_state = trained
    for name, param in pipe.unet.named_parameters():
        if ".lora_" in name:
            assert param.requires_grad
            continue
        assert not param.requires_grad
        local = official_key("unet", name).removeprefix("model.diffusion_model.")
        assert torch.equal(param, base_state[local]), name


def test_adapter_file_is_small_and_self_describing(trained):
    from safetensors import safe_open

    from toonctl.training.lora import lora_targets

    pipe, path, spec, _ = trained
    with safe_open(str(path), framework="pt") as handle:
        meta, keys = handle.metadata(), list(handle.keys())
    assert meta["format"] == "toonctl-lora-v1" and meta["rank"] == "4" and float(meta["alpha"]) == 8.0
    targets = lora_targets(load_tiny_unet())
    assert len(keys) == 2 * len(targets) == 2 * int(meta["layers"])
    assert all(k.startswith("model.diffusion_model.") and "transformer_blocks" in k for k in keys)
    assert not any("temopral" in k or "init_attn" in k or ".2.transformer" in k for k in keys)


def test_merge_scale_zero_is_bit_identical(trained):
    from toonctl.training.lora import merge_lora_file

    _, path, _, _ = trained
    unet = load_tiny_unet()
    before = unet_probe(unet)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    assert merge_lora_file(unet, path, scale=0.0) > 0
    assert torch.equal(unet_probe(unet), before)
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())


def test_merge_round_trip_equals_the_adapted_model(trained):
    from toonctl.training.lora import merge_lora_file

    pipe, path, _, _ = trained
    unet = load_tiny_unet()
    plain = unet_probe(unet)
    merge_lora_file(unet, path, scale=1.0)
    merged = unet_probe(unet)
    adapted = unet_probe(pipe.unet)
    assert (merged - plain).abs().max() > 1e-3 * plain.abs().max()  # the trained adapter changes the output
    assert_rel_close(merged, adapted, 1e-5, "merged vs peft-wrapped")


def test_merge_scale_is_linear(trained):
    from toonctl.training.lora import merge_lora_file

    _, path, _, _ = trained
    key = "input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight"
    base = load_tiny_unet().state_dict()[key]
    weights = {}
    for scale in (0.5, 1.0):
        unet = load_tiny_unet()
        merge_lora_file(unet, path, scale=scale)
        weights[scale] = unet.state_dict()[key]
    assert_rel_close(weights[1.0] - base, 2 * (weights[0.5] - base), 1e-5, "delta(1) = 2 delta(0.5)")


def test_conv_adapters_round_trip(tmp_path):
    from toonctl.training.lora import lora_parameter_count, merge_lora_file, save_lora_adapter
    from toonctl.training.trainable import LoraSpec, summarize_trainable

    spec = LoraSpec(rank=2, alpha=2.0, convs=True)
    pipe = train_adapter(spec, steps=2)
    summary = summarize_trainable(pipe)
    assert summary.trainable_params == summary.groups["lora"].total == lora_parameter_count(load_tiny_unet(), spec)
    path = save_lora_adapter(pipe.unet, tmp_path / "conv.safetensors", spec)
    unet = load_tiny_unet()
    merge_lora_file(unet, path)
    assert_rel_close(unet_probe(unet), unet_probe(pipe.unet), 1e-5, "conv LoRA merged vs wrapped")


def test_bad_adapter_files_are_user_errors(tmp_path, trained):
    from safetensors.torch import save_file

    from toonctl.errors import ToonctlError
    from toonctl.training.lora import merge_lora_file

    unet = load_tiny_unet()
    with pytest.raises(ToonctlError, match="not found"):
        merge_lora_file(unet, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ToonctlError, match="cannot read"):
        merge_lora_file(unet, tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ToonctlError, match="not a toonctl LoRA"):
        merge_lora_file(unet, tmp_path / "other.safetensors")
    bad = {
        "model.diffusion_model.nope.lora_A.weight": torch.zeros(2, 4),
        "model.diffusion_model.nope.lora_B.weight": torch.zeros(4, 2),
    }
    save_file(
        bad, str(tmp_path / "bad.safetensors"), metadata={"format": "toonctl-lora-v1", "rank": "2", "alpha": "2.0"}
    )
    with pytest.raises(ToonctlError, match="no layer"):
        merge_lora_file(unet, tmp_path / "bad.safetensors")


def test_lora_option_parsing():
    from pathlib import Path

    from toonctl.errors import ToonctlError
    from toonctl.training.lora import parse_lora_option

    assert parse_lora_option("style.safetensors") == (Path("style.safetensors"), 1.0)
    assert parse_lora_option("style.safetensors:0.6") == (Path("style.safetensors"), 0.6)
    assert parse_lora_option("a/b:c.safetensors:-1") == (Path("a/b:c.safetensors"), -1.0)
    assert parse_lora_option("C:\\loras\\x.safetensors") == (Path("C:\\loras\\x.safetensors"), 1.0)
    for bad in (":0.5", "x.safetensors:nan", "x.safetensors:inf"):
        with pytest.raises(ToonctlError):
            parse_lora_option(bad)


def test_several_adapters_merge_in_order_and_a_bad_one_changes_nothing(trained, tmp_path):
    from toonctl.errors import ToonctlError
    from toonctl.training.lora import merge_lora_file, merge_lora_files

    _, path, _, _ = trained
    once = load_tiny_unet()
    merge_lora_file(once, path, 1.0)
    twice_half = load_tiny_unet()
    assert merge_lora_files(twice_half, [(path, 0.5), (path, 0.5)]) > 0
    assert_rel_close(unet_probe(twice_half), unet_probe(once), 1e-5, "0.5 + 0.5 == 1")

    unet = load_tiny_unet()
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(ToonctlError):
        merge_lora_files(unet, [(path, 1.0), (tmp_path / "missing.safetensors", 1.0)])
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())


def test_a_preset_after_lora_adds_to_the_adapters():
    from toonctl.training.lora import add_lora
    from toonctl.training.trainable import LoraSpec, apply_trainable

    pipe = load_tiny_pipe()
    add_lora(pipe.unet, LoraSpec(rank=2))
    summary = apply_trainable(pipe, "projector")
    assert summary.groups["lora"].trainable == summary.groups["lora"].total > 0
    assert summary.groups["projector"].trainable == summary.groups["projector"].total
    assert summary.groups["spatial"].trainable == 0
    assert summary.trainable_params == summary.groups["lora"].total + summary.groups["projector"].total
