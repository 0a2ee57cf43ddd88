"""``toonctl sketch-interp``, ``colorize`` and ``sketch`` end to end on the tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sketch_fixtures import MODEL_ARGS, draw_key, draw_sketch, save_official, tiny_encoder, tiny_extractor
from typer.testing import CliRunner

from toonctl.cli.app import app
from toonctl.io.frames import fit_image, read_image


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sketch-cli")
    sketches = root / "sketches"
    sketches.mkdir()
    for i in range(7):
        draw_sketch(sketches / f"{i:04d}.png", 20 + 20 * i)
    return {
        "root": root,
        "keys": [draw_key(root / f"key{i}.png", 20 + 120 * i, (60 * i, 80, 200)) for i in range(2)],
        "sketches": sketches,
        "encoder": save_official(tiny_encoder(), root / "sketch_encoder.ckpt", layout="wrapped"),
        "extractor": save_official(tiny_extractor(), root / "sketch_extractor.pth", prefix="module."),
    }


def _pngs(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


def test_sketch_interp_at_scale_zero_writes_what_interpolate_writes(files, tmp_path):
    """Same chain, output and numbering as ``interpolate``; scale 0 leaves every pixel as it was."""
    keys = files["keys"]
    plain = tmp_path / "plain"
    assert invoke("interpolate", *keys, "-o", f"{plain}/", "-n", "7", "-q", *MODEL_ARGS).exit_code == 0
    zero = tmp_path / "zero"
    result = invoke(
        "sketch-interp", *keys, "--sketches", files["sketches"], "--sketch", f"8={files['sketches'] / '0001.png'}",
        "--control-scale", "0", "-n", "7", "-o", f"{zero}/", "--json", "--sketch-encoder", files["encoder"],
        *MODEL_ARGS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["frames"] == 9 and info["sketches"] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert np.array_equal(_pngs(zero), _pngs(plain))


def _error(result, code=1) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result.output


def test_sketch_interp_usage_and_input_errors(files, tmp_path, monkeypatch):
    keys, out = files["keys"], tmp_path / "o.mp4"
    enc = ["--sketch-encoder", files["encoder"]]
    assert "INDEX=PATH" in _error(invoke("sketch-interp", *keys, "--sketch", "five.png", "-o", out, *enc), 2)
    assert "give sketches" in _error(invoke("sketch-interp", *keys, "-o", out, *enc, *MODEL_ARGS), 2)
    one_key = invoke("sketch-interp", keys[0], "--sketches", files["sketches"], "-o", out, *enc, *MODEL_ARGS)
    assert "two or more key frames" in _error(one_key, 2)
    late = invoke("sketch-interp", *keys, "--sketch", f"16={files['keys'][0]}", "-o", out, *enc, *MODEL_ARGS)
    assert "output has 16 frames" in _error(late, 2)
    assert "polarity" in _error(invoke("sketch-interp", *keys, "--sketches", files["sketches"], "--polarity", "x",
                                       "-o", out, *enc, *MODEL_ARGS), 2)  # fmt: skip
    missing = invoke("sketch-interp", *keys, "--sketch", f"3={tmp_path / 'nope.png'}", "-o", out, *enc, *MODEL_ARGS)
    assert "nope.png" in _error(missing)
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path))
    no_encoder = invoke("sketch-interp", *keys, "--sketches", files["sketches"], "-o", out, *MODEL_ARGS)
    assert "toonctl weights fetch --sketch" in _error(no_encoder)
    assert not out.exists()


def test_colorize_two_references_in_windows(files, tmp_path):
    refs = files["keys"]
    out = tmp_path / "coloured"
    result = invoke(
        "colorize", "--refs", *refs, "--sketches", files["sketches"], "--window", "4", "-o", f"{out}/", "--json",
        "--sketch-encoder", files["encoder"], *MODEL_ARGS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["frames"] == 7 and info["references"] == 2 and info["passes"] == 3
    frames = _pngs(out)
    assert frames.shape == (7, 32, 64, 3)
    for ref, index in ((refs[0], 0), (refs[1], 6)):  # the references are frames 0 and 6, exactly
        assert np.array_equal(frames[index], np.asarray(fit_image(read_image(ref), (32, 64), "crop")))


def test_colorize_one_reference_and_errors(files, tmp_path):
    out = tmp_path / "one.gif"
    enc = ["--sketch-encoder", files["encoder"]]
    five = [f"{i}={files['sketches'] / f'000{i}.png'}" for i in range(5)]
    sketch_args = [a for s in five for a in ("--sketch", s)]
    result = invoke("colorize", files["keys"][0], *sketch_args, "-o", out, "-q", *enc, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    assert "5 frames" in result.stdout and "1 reference," in result.stdout
    three = invoke("colorize", "--refs", *files["keys"], files["keys"][0], "--sketches", files["sketches"], "-o", out)
    assert "one or two" in _error(three, 2)
    assert "at most the model's 16" in _error(
        invoke("colorize", "--refs", files["keys"][0], "--sketches", files["sketches"], "--window", "20", "-o", out,
               *enc, *MODEL_ARGS), 2,
    )  # fmt: skip


def test_sketch_extracts_line_art_from_images_folders_and_videos(files, tmp_path):
    from toonctl.io.video import read_frames, to_uint8, write_frames

    ext = ["--extractor", files["extractor"], "--load-size", "64", "--device", "cpu"]
    key = files["keys"][0]
    result = invoke("sketch", key, "-o", tmp_path / "lines.png", "--json", *ext)
    assert result.exit_code == 0, result.output
    lines = Image.open(tmp_path / "lines.png")
    assert lines.mode == "L" and lines.size == Image.open(key).size
    assert json.loads(result.stdout)["input"] == "image"

    result = invoke("sketch", files["sketches"], "-o", f"{tmp_path / 'folder'}/", "-q", *ext)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "folder").glob("frame_*.png"))) == 7

    import torch

    clip = write_frames(to_uint8(torch.rand(5, 3, 64, 96) * 2 - 1), tmp_path / "clip.mp4", fps=12)
    result = invoke("sketch", clip, "-o", tmp_path / "clip_lines.mp4", "-q", *ext)
    assert result.exit_code == 0, result.output
    frames, fps = read_frames(tmp_path / "clip_lines.mp4")
    assert frames.shape[:3] == (5, 64, 96) and fps == pytest.approx(12)

    assert "holds one picture" in _error(invoke("sketch", clip, "-o", tmp_path / "x.png", *ext))
    assert "multiple of 32" in _error(invoke("sketch", key, "-o", tmp_path / "y.png", *ext[:2], "--load-size", "48",
                                             "--device", "cpu"), 2)  # fmt: skip
    assert "none.pth does not exist" in _error(invoke("sketch", key, "-o", tmp_path / "z.png",
                                                      "--extractor", tmp_path / "none.pth"))  # fmt: skip


def test_batch_shot_with_a_sketches_folder(files, tmp_path, monkeypatch):
    """A shot folder with sketches/ is rendered as `sketch-interp` renders it; other shots as `interpolate`."""
    import shutil

    shots, out = tmp_path / "shots", tmp_path / "out"
    for name in ("plain", "sketched"):
        (shots / name).mkdir(parents=True)
        for i, key in enumerate(files["keys"]):
            shutil.copy(key, shots / name / f"{i}.png")
    shutil.copytree(files["sketches"], shots / "sketched" / "sketches")
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(files["encoder"], weights / "sketch_encoder.ckpt")
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(weights))
    result = invoke("batch", shots, "-o", out, "-f", "png", "--json", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    reference = tmp_path / "reference"
    args = ["--sketches", files["sketches"], "--sketch-encoder", files["encoder"], "-o", f"{reference}/", "-q"]
    assert invoke("sketch-interp", *files["keys"], *args, *MODEL_ARGS).exit_code == 0
    plain = tmp_path / "plain"
    assert invoke("interpolate", *files["keys"], "-o", f"{plain}/", "-q", *MODEL_ARGS).exit_code == 0
    assert np.array_equal(_pngs(out / "sketched"), _pngs(reference))
    assert np.array_equal(_pngs(out / "plain"), _pngs(plain))
    assert not np.array_equal(_pngs(out / "sketched"), _pngs(out / "plain"))
