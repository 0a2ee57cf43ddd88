"""``toonctl train sketch-encoder`` end to end on the tiny model: a run with sketches made (and cached) by the
extractor, export to the released file layout, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from sketchdec_fixtures import write_clips
from typer.testing import CliRunner

from conftest import TINY_A
from toonctl.cli.app import app
from toonctl.training.engine import read_trained_weights

MODEL = ["--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml")]
SMALL = ["--size", "64x64", "--frames", "4", "--stride", "1:2", "--num-workers", "0", "--cpu", "--log-every", "1"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from toonctl.models.sketch_extractor import SketchExtractor, SketchExtractorConfig

    root = tmp_path_factory.mktemp("sketch-train-cli")
    torch.manual_seed(0)
    extractor = SketchExtractor(SketchExtractorConfig(ngf=4, num_downs=5))
    torch.save(extractor.state_dict(), root / "sketch_extractor.pth")
    return {"clips": write_clips(root / "clips"), "extractor": root / "sketch_extractor.pth", "root": root}


def test_train_and_export_the_released_layout(files, tmp_path):
    from toonctl.config import load_config
    from toonctl.models.sketch_encoder import SketchEncoderConfig, load_sketch_encoder

    run, cache = tmp_path / "run", tmp_path / "cache"
    result = invoke(
        "train", "sketch-encoder", files["clips"], "-o", run, *MODEL, *SMALL, "--sketch-extractor", files["extractor"],
        "--sketch-size", "64", "--sketch-cache", cache, "--max-steps", "2", "--effective-batch", "1", "--lr", "1e-3",
        "--validation-every", "2", "--validation-steps", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained sketch-encoder to step 2" in result.stdout
    assert "trainable parameters (the sketch encoder)" in result.stderr
    assert list(cache.glob("*.pt"))
    assert (run / "validation" / "step-0000002.gif").is_file()

    exported = tmp_path / "sketch_encoder.ckpt"
    result = invoke("train", "export", run, "-o", exported, "-q")
    assert result.exit_code == 0, result.output
    config = SketchEncoderConfig.for_unet(load_config(TINY_A / "config.yaml").unet)
    encoder = load_sketch_encoder(exported, config)
    trained = read_trained_weights(run / "checkpoints" / "step-0000002")["sketch_encoder"]
    assert encoder.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in encoder.state_dict().items())
    assert any(trained[k].any() for k in trained if k.startswith("zero_convs."))  # it moved off zero


def test_missing_files_are_clear_errors(files, tmp_path):
    args = ["train", "sketch-encoder", files["clips"], "-o", tmp_path / "r", *MODEL, *SMALL]
    result = invoke(*args, "--sketch-extractor", tmp_path / "none.pth")
    assert result.exit_code == 1 and "Error: --sketch-extractor" in result.stderr and "Traceback" not in result.output
    result = invoke(*args, "--sketch-extractor", files["extractor"], "--encoder", tmp_path / "none.ckpt")
    assert result.exit_code == 2 and "--encoder" in result.output
    result = invoke(*args, "--sketch-extractor", files["extractor"], "--context", "everything")
    assert result.exit_code == 2 and "--context" in result.output
    result = invoke(*args, "--sketch-extractor", files["extractor"], "--sketch-size", "100")
    assert result.exit_code == 1 and "Error: --sketch-size 100 is not a multiple of 32" in result.stderr


def test_sketches_from_folders_beside_the_clips(files, tmp_path):
    from PIL import Image

    from toonctl.io.clips import discover_clips

    clips = write_clips(tmp_path / "clips")
    args = ["train", "sketch-encoder", clips, *MODEL, *SMALL, "--sketches", "folder"]
    # no sketches yet: no usable clip, reported before the model loads
    result = invoke(*args, "-o", tmp_path / "none")
    assert result.exit_code == 1 and "no sketch folder" in result.stderr

    for clip in sorted(clips.glob("*.mp4")):
        folder = clips / "sketches" / clip.stem
        folder.mkdir(parents=True)
        for i in range(8):
            Image.new("L", (64, 64), 255 - 20 * i).save(folder / f"{i:04d}.png")
    assert [r.path.name for r in discover_clips([clips])] == ["shot0.mp4", "shot1.mp4"]  # sketches/ is no clip
    run = tmp_path / "run"
    result = invoke(*args, "-o", run, "--max-steps", "1", "--effective-batch", "1")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["sketch_folders"] is True and config["objective_settings"]["extractor"] is None
