"""``toonctl eval`` end to end on the tiny model: every output, resuming, missing optional pieces, errors."""

from __future__ import annotations

import csv
import json

import pytest
from _fakes import save_tiny_i3d, save_tiny_rife
from typer.testing import CliRunner

from conftest import TINY_A, draw_key
from toonctl.cli.app import app

TINY = TINY_A / "model.safetensors"
QUICK = ["--steps", "2", "--size", "64x64", "--num-frames", "6"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two frame folders of a ball rolling right (the second faster), with a caption each."""
    root = tmp_path_factory.mktemp("clips")
    for c, speed in enumerate((5, 9)):
        folder = root / f"shot{c}"
        folder.mkdir()
        for i in range(7):
            draw_key(folder / f"{i:02d}.png", 4 + speed * i, size=(64, 128))
        (root / f"shot{c}.txt").write_text("a red ball rolls on the grass")
    return root


@pytest.fixture(autouse=True)
def no_local_weights(tmp_path, monkeypatch):
    """Nothing found by accident: empty weights folder, no LPIPS/I3D/torch-hub files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in ("TOONCTL_LPIPS_DIR", "TOONCTL_I3D"):
        monkeypatch.delenv(name, raising=False)


def invoke(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)], env={"COLUMNS": "200"})


def test_full_run_writes_every_output_and_resumes(clips, tmp_path):
    i3d, rife = save_tiny_i3d(tmp_path / "i3d.pt"), save_tiny_rife(tmp_path / "flownet.pkl")
    out = tmp_path / "report"
    args = [clips, "-o", out, "--weights", TINY, "--i3d", i3d, "--rife-weights", rife, *QUICK, "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    summary = {row["engine"]: row for row in data["summary"]}
    assert list(summary) == ["toonctl", "blend", "rife", "real"]
    for engine in ("toonctl", "blend", "rife"):
        row = summary[engine]
        assert row["clips"] == 2
        for metric in ("psnr", "ssim", "clip_img", "clip_txt", "cpbd", "fvd", "kvd"):
            assert isinstance(row[metric], float), (engine, metric)
        assert row["lpips"] is None
    assert summary["real"]["cpbd"] is not None and summary["real"]["clip_txt"] is not None
    assert set(data["unavailable"]) == {"lpips"} and "never downloaded" in data["unavailable"]["lpips"]
    assert summary["blend"]["psnr"] > summary["toonctl"]["psnr"]  # a random tiny model loses to a cross-fade
    # files: the two reports, and per clip the cache, the sheet and the video
    assert (out / "report.json").is_file()
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4 + 4  # (3 engines + real) per clip, then the means
    assert [r["engine"] for r in rows if r["clip"] == "mean"] == ["toonctl", "blend", "rife", "real"]
    for clip in data["clips"]:
        folder = out / "clips" / clip["clip"]
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["blend.npz", "real.npz", "rife.npz", "sheet.png", "side_by_side.mp4", "toonctl.npz"]
        assert clip["frames"] == [0, 1, 2, 3, 4, 5] and clip["fs"] == 10
    # a second run reuses every generated clip and reproduces the numbers
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("clips/*/*.npz")}
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("clips/*/*.npz")} == stamps
    assert json.loads(again.stdout)["summary"] == data["summary"]


def test_missing_optional_pieces_are_explained_not_fatal(clips, tmp_path):
    out = tmp_path / "report"
    result = invoke(clips, "-o", out, "--engines", "blend,rife", "--size", "64x96", "--num-frames", "5")
    assert result.exit_code == 0, result.output
    assert "engine rife skipped" in result.stderr
    text = result.stdout
    for piece in ("lpips", "fvd, kvd", "clip_img, clip_txt", "toonctl[rife]"):
        assert piece in text, piece
    data = json.loads((out / "report.json").read_text())
    assert set(data["unavailable"]) == {"lpips", "fvd", "kvd", "clip_img", "clip_txt"}
    assert [row["engine"] for row in data["summary"]] == ["blend", "real"]
    assert data["summary"][0]["ssim"] > 0


def test_bad_input_is_one_error_line(clips, tmp_path):
    missing = invoke(tmp_path / "nope", "-o", tmp_path / "r", "--engines", "blend")
    assert missing.exit_code == 1 and "Error:" in missing.stderr and "Traceback" not in missing.output
    short = invoke(clips, "-o", tmp_path / "r", "--engines", "blend", "--num-frames", "16")
    assert short.exit_code == 1 and "no clip has the 16 frames" in short.stderr
    no_i3d = invoke(clips, "-o", tmp_path / "r", "--engines", "blend", "--i3d", tmp_path / "i3d.pt")
    assert no_i3d.exit_code == 1 and "no I3D file at" in no_i3d.stderr
    assert invoke(clips, "-o", tmp_path / "r", "--engines", "film").exit_code == 2
    assert invoke(clips, "-o", tmp_path / "r", "--offload", "bogus").exit_code == 2
    assert invoke(clips, "-o", tmp_path / "r", "--decoder", "bogus").exit_code == 2
    no_model = invoke(clips, "-o", tmp_path / "r", "--engines", "toonctl")
    assert no_model.exit_code == 1 and "Error:" in no_model.stderr


def test_lora_adds_an_engine_with_the_adapter_merged(clips, tmp_path):
    pytest.importorskip("peft")
    import torch

    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.training.lora import add_lora, save_lora_adapter
    from toonctl.training.trainable import LoraSpec

    unet = InterpolationPipeline.from_checkpoint(TINY, TINY_A / "config.yaml").unet
    spec = LoraSpec(rank=2, alpha=2.0)
    add_lora(unet, spec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".lora_B." in name:  # a trained adapter's stand-in: it changes the output
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    adapter = save_lora_adapter(unet, tmp_path / "style.safetensors", spec)
    out = tmp_path / "report"
    args = [clips, "-o", out, "--weights", TINY, "--engines", "toonctl", "--lora", adapter, "--lora", f"{adapter}:0"]
    result = invoke(*args, *QUICK, "--no-media", "--json")
    assert result.exit_code == 0, result.output
    summary = {row["engine"]: row for row in json.loads(result.stdout)["summary"]}
    assert list(summary) == ["toonctl", "toonctl+style", "toonctl+style@0", "real"]
    assert summary["toonctl+style@0"]["psnr"] == summary["toonctl"]["psnr"]  # scale 0 is the base model
    assert summary["toonctl+style"]["psnr"] != summary["toonctl"]["psnr"]
    missing = invoke(clips, "-o", out, "--weights", TINY, "--lora", tmp_path / "none.safetensors", *QUICK)
    assert missing.exit_code == 1 and missing.stderr.count("Error:") == 1 and "Traceback" not in missing.output
