"""``toonctl decode-bench`` end to end on the tiny official-layout model, plus ``--decoder`` of ``interpolate``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from conftest import TINY_A
from toonctl.cli.app import app
from toonctl.io.video import write_frames
from toonctl.pipelines.decoders import DECODERS

MODEL_ARGS = [
    "--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"), "--device", "cpu",
]  # fmt: skip
SMALL = ["--size", "32x32", "--num-frames", "4"]  # 4-frame clips at 32x32: a decode takes ~0.1 s


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these decodes are overhead-bound and crawl when two threads share a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cartoon(count: int, size=(64, 96)) -> np.ndarray:
    """A ball crossing a flat-colour scene: ``(count, H, W, 3)`` uint8."""
    h, w = size
    frames = []
    for t in range(count):
        img = Image.new("RGB", (w, h), (150, 205, 240))
        d = ImageDraw.Draw(img)
        d.rectangle([0, h * 3 // 4, w, h], fill=(120, 190, 90), outline=(20, 20, 20), width=2)
        x = 4 + 6 * t
        d.ellipse([x, h // 3, x + h // 3, h * 2 // 3], fill=(220, 50, 50), outline=(20, 20, 20), width=2)
        frames.append(np.asarray(img))
    return np.stack(frames)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """An mp4 of 10 frames (two 4-frame clips) and a folder of 6 PNG frames (one clip)."""
    root = tmp_path_factory.mktemp("bench")
    video = Path(write_frames(_cartoon(10), root / "shot.mp4", fps=12))
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(_cartoon(6)):
        Image.fromarray(frame).save(folder / f"f{i}.png")
    return video, folder


def invoke(*args):
    return CliRunner().invoke(app, ["decode-bench", *map(str, args)])


def test_every_variant_runs_and_reports(inputs, tmp_path):
    report = tmp_path / "report.json"
    result = invoke(*inputs, "--json", "--max-clips", "1", "-o", report, *SMALL, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert json.loads(report.read_text()) == data
    header = data["report"]
    assert header["torch"] == torch.__version__ and header["device"] == "cpu" and header["device_name"]
    assert header["dtypes"] == ["fp32"] and (header["height"], header["width"], header["num_frames"]) == (32, 32, 4)
    assert header["lpips"].startswith(("AlexNet", "no ")) and header["memory"]
    assert [i["clips"] for i in header["inputs"]] == [1, 1]
    rows = data["results"]
    assert len(rows) == 2 * len(DECODERS) and {r["decoder"] for r in rows} == set(DECODERS)
    for row in rows:
        assert row["status"] == "ok", row
        assert 0 < row["ssim"] <= 1 and row["psnr"] > 0 and row["seconds_per_frame"] > 0, row
        assert row["max_diff_vs_full"] >= row["mean_diff_vs_full"] >= 0, row
        if header["memory"].startswith("peak RSS"):
            assert row["peak_mem_mib"] > 0 and row["work_mem_mib"] is not None, row
    # The full decoder is its own reference; without the splice (T = 4 has none) it is the same decode.
    for row in rows:
        if row["decoder"] in ("dualref", "dualref-nosplice"):
            assert row["max_diff_vs_full"] == 0, row
        if row["decoder"] in ("norefs", "spatial"):
            assert row["max_diff_vs_full"] > 0, row
    summary = {(s["decoder"], s["dtype"]): s for s in data["summary"]}
    assert set(summary) == {(name, "fp32") for name in DECODERS} and summary["dualref", "fp32"]["clips"] == 2


def test_table_csv_and_dtypes(inputs, tmp_path):
    video, folder = inputs
    args = ["--decoders", "dualref,chunked:2:1", "--dtype", "fp32,fp16", *SMALL, *MODEL_ARGS]
    result = invoke(folder, "--csv", *args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["decoder"], r["dtype"]) for r in rows] == [
        ("dualref", "fp32"), ("chunked:2:1", "fp32"), ("dualref", "fp16"), ("chunked:2:1", "fp16"),
    ]  # fmt: skip
    assert all(r["torch"] == torch.__version__ and r["device"] == "cpu" and r["num_frames"] == "4" for r in rows)
    assert float(rows[0]["max_diff_vs_full"]) == 0 and float(rows[2]["max_diff_vs_full"]) > 0  # fp16 differs
    assert float(rows[1]["max_diff_vs_full"]) > 0  # chunks of 2 frames only approximate the one pass
    table = tmp_path / "bench.txt"
    result = invoke(video, "--decoders", "dualref", "-o", table, *SMALL, *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    for text in (result.stdout, table.read_text()):
        assert "decode-bench: 2 clip(s) of 4 frames at 32×32" in text and "dualref" in text
        assert torch.__version__ in text and "PSNR" in text


def test_identical_frames_give_infinite_psnr_in_every_format(inputs, monkeypatch):
    """With a decoder that returns the input frames, PSNR is infinite: null in JSON, inf in CSV, SSIM 1."""
    import toonctl.decode_bench as bench

    def measure(stage, vae, enc, clip, reference, device, lpips):
        return {"status": "ok", **dict.fromkeys(bench.COLUMNS[6:]), "psnr": float("inf"), "ssim": 1.0}

    monkeypatch.setattr(bench, "_measure", measure)
    result = invoke(inputs[1], "--decoders", "dualref", "--json", *SMALL, *MODEL_ARGS)
    row = json.loads(result.stdout)["results"][0]
    assert row["psnr"] is None and row["ssim"] == 1.0
    result = invoke(inputs[1], "--decoders", "dualref", "--csv", *SMALL, *MODEL_ARGS)
    assert next(csv.DictReader(io.StringIO(result.stdout)))["psnr"] == "inf"


def test_refusals(inputs, tmp_path):
    video, folder = inputs
    short = invoke(folder, "--num-frames", "8", "--size", "32x32", *MODEL_ARGS)
    assert short.exit_code == 1
    assert short.stderr.startswith(f"Error: {folder} has 6 frames; decode-bench needs at least 8")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    unreadable = invoke(broken, *SMALL, *MODEL_ARGS)
    assert unreadable.exit_code == 1 and unreadable.stderr.startswith(f"Error: cannot read {broken}")
    assert invoke(folder, "--decoders", "bogus", *SMALL, *MODEL_ARGS).exit_code == 2
    assert invoke(folder, "--json", "--csv", *SMALL, *MODEL_ARGS).exit_code == 2
    assert invoke(folder, "--dtype", "fp64", *SMALL, *MODEL_ARGS).exit_code == 2


def test_interpolate_takes_a_decoder(tmp_path):
    keys = []
    for i, frame in enumerate(_cartoon(2, size=(64, 128))):
        keys.append(tmp_path / f"key{i}.png")
        Image.fromarray(frame).save(keys[-1])
    args = [*keys, "--steps", "1", "--size", "32x64", *MODEL_ARGS]
    bogus = CliRunner().invoke(app, ["interpolate", *map(str, args), "-o", str(tmp_path / "x.gif"), "--decoder", "x"])
    assert bogus.exit_code == 2 and "unknown decoder" in bogus.output
    out = tmp_path / "frames"
    result = CliRunner().invoke(app, ["interpolate", *map(str, args), "-o", f"{out}/", "--decoder", "chunked:8:4"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("frame_*.png"))) == 16


@pytest.mark.parametrize("probe", ["hwm", "sampled"])
def test_peak_memory_sees_a_freed_allocation(probe, monkeypatch):
    import time

    import toonctl.peak_memory as bench

    if probe == "hwm" and bench._cpu_probe() != "hwm":
        pytest.skip("no resettable peak RSS here (not Linux, or /proc/self/clear_refs is read-only)")
    pytest.importorskip("psutil")
    monkeypatch.setattr(bench, "_cpu_probe", lambda: probe)
    with bench.PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        time.sleep(0.05)
        del block
    assert memory.peak - memory.before >= 60 * 1024 * 1024
    with bench.PeakMemory(torch.device("cpu")) as small:
        time.sleep(0.01)
    assert small.peak - small.before < 16 * 1024 * 1024  # the earlier peak does not leak into the next block
