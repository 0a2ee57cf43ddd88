"""``--lora FILE[:SCALE]`` on the inference commands: merged at load, scale 0 changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import load_tiny_unet
from typer.testing import CliRunner

from conftest import TINY_A, draw_key
from toonctl.cli.app import app

pytest.importorskip("peft")

MODEL_ARGS = [
    "--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"),
    "--device", "cpu", "--steps", "2", "--size", "32x64", "--num-frames", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter file whose B matrices are random (a trained adapter's stand-in: it changes the output)."""
    from toonctl.training.lora import add_lora, save_lora_adapter
    from toonctl.training.trainable import LoraSpec

    unet = load_tiny_unet()
    spec = LoraSpec(rank=2, alpha=2.0)
    add_lora(unet, spec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".lora_B." in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    return save_lora_adapter(unet, tmp_path_factory.mktemp("lora") / "style.safetensors", spec)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return [draw_key(folder / f"key{i}.png", 20 + 80 * i, (50 * i, 80, 200)) for i in range(2)]


def render(tmp_path, keys, name: str, *extra: str) -> np.ndarray:
    out = tmp_path / name
    result = CliRunner().invoke(app, ["interpolate", *map(str, keys), "-o", f"{out}/", "-q", *MODEL_ARGS, *extra])
    assert result.exit_code == 0, result.output
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])


def test_lora_changes_the_output_and_scale_zero_does_not(tmp_path, keys, adapter):
    plain = render(tmp_path, keys, "plain")
    off = render(tmp_path, keys, "off", "--lora", f"{adapter}:0")
    styled = render(tmp_path, keys, "styled", "--lora", str(adapter))
    assert np.array_equal(off, plain)
    inner = slice(1, -1)  # the key frames are pasted back exactly
    assert np.abs(styled[inner].astype(int) - plain[inner].astype(int)).mean() > 1


def test_bad_lora_values(tmp_path, keys, adapter):
    runner = CliRunner()
    base = ["interpolate", *map(str, keys), "-o", str(tmp_path / "x.gif"), *MODEL_ARGS]
    result = runner.invoke(app, [*base, "--lora", ":0.5"])
    assert result.exit_code == 2 and "no file given" in result.output
    result = runner.invoke(app, [*base, "--lora", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 1 and "Error: LoRA file not found" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.gif").exists()


def test_library_loads_with_loras(adapter):
    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.training.lora import merge_lora_file

    pipe = InterpolationPipeline.from_checkpoint(
        TINY_A / "model.safetensors", TINY_A / "config.yaml", loras=((adapter, 0.7),)
    )
    expected = load_tiny_unet()
    merge_lora_file(expected, adapter, 0.7)
    loaded = pipe.unet.state_dict()
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded[key], value), key
