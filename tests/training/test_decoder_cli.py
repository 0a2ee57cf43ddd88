"""``toonctl train decoder`` end to end on the tiny model: run with validation, export into a full checkpoint,
and decode-bench on the export; bad options are usage errors."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from sketchdec_fixtures import write_clips
from typer.testing import CliRunner

from conftest import TINY_A
from toonctl.cli.app import app

MODEL = ["--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml")]
SMALL = ["--size", "32x64", "--frames", "4", "--stride", "1:2", "--num-workers", "0", "--cpu", "--log-every", "1"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("decoder-cli-clips"))


def test_train_export_and_decode_bench(clips, tmp_path, monkeypatch):
    monkeypatch.setenv("TOONCTL_LPIPS_DIR", str(tmp_path / "no-lpips"))
    run = tmp_path / "run"
    result = invoke(
        "train", "decoder", clips, "-o", run, *MODEL, *SMALL, "--max-steps", "1", "--validation-every", "1",
        "--disc-start", "0", "--lr", "1e-4", "--init", "image-decoder", "--batch-size", "2", "--effective-batch", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained decoder to step 1" in result.stdout
    assert "trainable parameters (the decoder)" in result.stderr and "1 - SSIM" in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["objective_settings"]["perceptual"] == "ssim"
    report = json.loads((run / "validation" / "step-0000001.json").read_text())
    assert {"psnr", "ssim"} <= set(report["mean"])

    exported = tmp_path / "model.safetensors"
    result = invoke("train", "export", run, "-o", exported, "-q")
    assert result.exit_code == 0, result.output
    base, new = load_file(str(TINY_A / "model.safetensors")), load_file(str(exported))
    assert base.keys() == new.keys()
    changed = {k for k in base if not (base[k] == new[k]).all()}
    assert changed and all(k.startswith("first_stage_model.decoder.") for k in changed)

    bench = invoke(
        "decode-bench", clips / "shot0.mp4", "--weights", exported, "--config", TINY_A / "config.yaml",
        "--decoders", "dualref", "--num-frames", "4", "--size", "64x64", "--device", "cpu", "--json",
    )  # fmt: skip
    assert bench.exit_code == 0, bench.output
    rows = json.loads(bench.stdout)["results"]
    assert rows and all(r["psnr"] > 0 for r in rows)


def test_default_batch_is_the_papers_16_and_bad_data_fails_before_the_model(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    result = invoke("train", "decoder", tmp_path, "-o", tmp_path / "r", *MODEL, *SMALL, "--batch-size", "32")
    assert result.exit_code == 1
    assert "not the 16 asked" in result.stderr  # 32 per pass exceeds the default effective batch of 16
    assert "Error: none of the 1 clips could be used" in result.stderr and "Traceback" not in result.output


def test_bad_options_are_usage_errors(clips, tmp_path):
    result = invoke("train", "decoder", clips, "-o", tmp_path / "r", *MODEL, "--init", "nope")
    assert result.exit_code == 2 and "--init" in result.output
    result = invoke("train", "decoder", clips, "-o", tmp_path / "r", *MODEL, "--image-decoder", tmp_path / "x.ckpt")
    assert result.exit_code == 2 and "needs --init" in result.output
