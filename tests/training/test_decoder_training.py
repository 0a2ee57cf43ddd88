"""The decoder objective in the training engine: two optimizers, and a resume across the discriminator's start
that continues exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from sketchdec_fixtures import train_settings, write_clips

from conftest import TINY_A
from toonctl.training.data import DataSettings
from toonctl.training.engine import train
from toonctl.training.logging import read_metrics_csv

DATA = DataSettings(size=(32, 64), num_frames=4, stride=(1, 2))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("decoder-clips"))


def make_objective():
    from toonctl.training.decoder_objective import DecoderObjective, PerceptualLoss
    from toonctl.weights import load_weights

    torch.manual_seed(0)
    vae = load_weights(TINY_A / "model.safetensors", TINY_A / "config.yaml", components=["vae"])["vae"]
    return DecoderObjective(vae, perceptual=PerceptualLoss(use_lpips=False, quiet=True), disc_start=2)


def run(clips, folder, resume=False, **overrides):
    settings = train_settings(folder, learning_rate=1e-3, **overrides)
    return train(make_objective, [clips], DATA, settings, objective_name="decoder", resume=resume)


def test_resume_across_the_discriminator_start_continues_exactly(clips, tmp_path):
    straight = run(clips, tmp_path / "straight", max_steps=3)
    run(clips, tmp_path / "split", max_steps=2)
    resumed = run(clips, tmp_path / "split", resume=True, max_steps=3)
    for name in ("model.safetensors", "model_1.safetensors"):  # the decoder, the discriminator
        a = load_file(str(straight.checkpoint / name))
        b = load_file(str(resumed.checkpoint / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-7)
    assert int(a["training_step"]) == 3
    rows = read_metrics_csv(tmp_path / "split" / "logs" / "metrics.csv")
    straight_rows = read_metrics_csv(tmp_path / "straight" / "logs" / "metrics.csv")
    for column in ("loss", "l1", "disc_loss"):
        assert [r[column] for r in rows] == pytest.approx([r[column] for r in straight_rows], abs=1e-7)
    assert [r["disc_factor"] for r in rows] == [0, 0, 1]
    assert [r["d_weight"] > 0 for r in rows] == [False, False, True]
