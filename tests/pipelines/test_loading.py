"""One load path: ``LoadOptions`` -> ``plan_load`` -> ``from_checkpoint``, and control stages as components
(found like the model, placed and offloaded like the UNet, several at once)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_A
from toonctl.errors import OptionError
from toonctl.pipelines.interpolate import InterpolationNoise, InterpolationPipeline
from toonctl.pipelines.loading import plan_load
from toonctl.pipelines.sketch import SketchControl
from toonctl.presets import LoadOptions

sys.path.insert(0, str(Path(__file__).parents[1] / "sketch"))
from sketch_fixtures import save_official, tiny_encoder  # noqa: E402

H, W, T = 32, 64, 4
MODEL = (TINY_A / "model.safetensors", TINY_A / "config.yaml")


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    return save_official(tiny_encoder(), tmp_path_factory.mktemp("enc") / "sketch_encoder.ckpt", layout="wrapped")


def _frame(seed: int) -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _hints() -> dict[int, torch.Tensor]:
    return {i: (torch.rand(1, H, W, generator=torch.Generator().manual_seed(10 + i)) > 0.8).float() for i in (1, 2)}


def _run(pipe, scales=(0.6,)) -> torch.Tensor:
    encoder = pipe.controls["sketch_encoder"]
    device = pipe.placement.device_for("sketch_encoder")
    stages = [SketchControl(encoder, _hints(), T, scale=s, device=device) for s in scales]
    noise = InterpolationNoise.draw(num_frames=T, latent_hw=(H // 8, W // 8), num_steps=2,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    return pipe(_frame(0), _frame(1), "a ball", num_frames=T, steps=2, noise=noise, control=stages).video


@pytest.fixture(scope="module")
def reference(encoder_file) -> torch.Tensor:
    options = LoadOptions(device="cpu", dtype="fp32", controls={"sketch_encoder": encoder_file})
    return _run(InterpolationPipeline.from_checkpoint(*MODEL, options=options))


def test_options_set_decoder_precision_and_controls_while_building(encoder_file):
    options = LoadOptions(
        device="cpu", dtype="autocast", decoder="chunked:2:1", controls={"sketch_encoder": encoder_file}
    )
    plan = plan_load(options, *MODEL)
    assert plan.describe().endswith("(fp32 weights, float16 autocast) with sketch_encoder.ckpt")
    pipe = InterpolationPipeline.from_checkpoint(*MODEL, options=options)
    assert pipe.decoder.name == "chunked:2:1" and pipe.autocast_dtype == torch.float16
    assert list(pipe.components()) == ["unet", "vae", "text_encoder", "image_encoder", "image_proj", "sketch_encoder"]
    assert {p.dtype for p in pipe.controls["sketch_encoder"].parameters()} == {torch.float32}


def test_control_stage_found_beside_the_model(tmp_path, encoder_file):
    import shutil

    for name in ("model.safetensors", "config.yaml"):
        shutil.copy(TINY_A / name, tmp_path / name)
    shutil.copy(encoder_file, tmp_path / "sketch_encoder.ckpt")
    plan = plan_load(
        LoadOptions(weights=tmp_path / "model.safetensors", device="cpu").with_controls(sketch_encoder=None)
    )
    assert plan.controls == {"sketch_encoder": tmp_path / "sketch_encoder.ckpt"}


@pytest.mark.parametrize(
    "placement", [{"offload": "model"}, {"device_map": "sketch_encoder=cpu,unet=cpu"}], ids=["offload", "map"]
)
def test_control_components_are_placed_like_the_others(reference, encoder_file, placement):
    options = LoadOptions(device="cpu", dtype="fp32", controls={"sketch_encoder": encoder_file}, **placement)
    pipe = InterpolationPipeline.from_checkpoint(*MODEL, options=options)
    assert torch.equal(_run(pipe), reference)
    if "offload" in placement:  # moved by its accelerate hook like the UNet, waits on the CPU between uses
        assert "sketch_encoder" in pipe.placement._hooks
        assert all(p.device.type == "cpu" for p in pipe.controls["sketch_encoder"].parameters())


def test_several_control_stages_add_up(reference, encoder_file):
    options = LoadOptions(device="cpu", dtype="fp32", controls={"sketch_encoder": encoder_file})
    pipe = InterpolationPipeline.from_checkpoint(*MODEL, options=options)
    halves = _run(pipe, scales=(0.3, 0.3))
    assert (halves - reference).abs().max() < 1e-4  # residuals are linear in the scale


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (LoadOptions(device="cpux"), "device"),
        (LoadOptions(dtype="fp64"), "dtype"),
        (LoadOptions(decoder="nope"), "decoder"),
        (LoadOptions(offload="disk"), "offload"),
        (LoadOptions(device_map="unet=cuda:7"), "device_map"),
        (LoadOptions(offload="model", device_map="vae=cpu"), "device_map"),
        (LoadOptions(attention="flash"), "attention"),
        (LoadOptions(controls={"depth": None}), "controls"),
    ],
)
def test_bad_options_name_the_option(options, option):
    with pytest.raises(OptionError) as caught:
        plan_load(options, *MODEL)
    assert caught.value.option == option and isinstance(caught.value, ValueError)
