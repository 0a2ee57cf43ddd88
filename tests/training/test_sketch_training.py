"""The sketch-encoder objective in the training engine: a run, and a resume that continues exactly."""

from __future__ import annotations

import pytest
import torch
from sketchdec_fixtures import load_tiny_pipe, train_settings, write_clips

from toonctl.training.data import DataSettings
from toonctl.training.engine import read_trained_weights, train
from toonctl.training.logging import read_metrics_csv

DATA = DataSettings(size=(32, 64), num_frames=4, stride=(1, 2))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("sketch-clips"))


def make_objective():
    from toonctl.models.sketch_extractor import SketchExtractor, SketchExtractorConfig
    from toonctl.training.sketch_objective import SketchEncoderObjective, new_sketch_encoder
    from toonctl.training.sketch_sources import ExtractedSketches

    torch.manual_seed(0)
    pipe = load_tiny_pipe()
    extractor = SketchExtractor(SketchExtractorConfig(ngf=4, num_downs=5)).eval()
    encoder = new_sketch_encoder(pipe.unet)
    return SketchEncoderObjective(pipe, encoder, sketches=ExtractedSketches(extractor, load_size=32))


def run(clips, folder, resume=False, **overrides):
    settings = train_settings(folder, learning_rate=1e-3, **overrides)
    return train(make_objective, [clips], DATA, settings, objective_name="sketch-encoder", resume=resume)


def test_resume_continues_exactly(clips, tmp_path):
    straight = run(clips, tmp_path / "straight", max_steps=3)
    run(clips, tmp_path / "split", max_steps=2)
    resumed = run(clips, tmp_path / "split", resume=True, max_steps=3)
    assert straight.step == resumed.step == 3
    a = read_trained_weights(straight.checkpoint)["sketch_encoder"]
    b = read_trained_weights(resumed.checkpoint)["sketch_encoder"]
    assert a.keys() == b.keys() and any(v.any() for k, v in a.items() if k.startswith("zero_convs."))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-7)
    rows = read_metrics_csv(tmp_path / "split" / "logs" / "metrics.csv")
    straight_rows = read_metrics_csv(tmp_path / "straight" / "logs" / "metrics.csv")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in straight_rows], abs=1e-7)
    assert all(0 < r["sketched_frames"] <= 0.5 for r in rows)  # 4 frames: in-betweens only
