"""FVD/KVD plumbing with a tiny TorchScript module standing in for I3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fakes import save_tiny_i3d

from toonctl.errors import CheckpointError
from toonctl.evaluation.i3d import I3DFeatures, find_i3d, resize_video
from toonctl.evaluation.scoring import set_metrics


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    return save_tiny_i3d(tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt")


def test_features_resize_to_224_and_batch(i3d_file):
    i3d = I3DFeatures.load(i3d_file)
    videos = torch.rand(3, 3, 6, 32, 48) * 2 - 1
    rows = i3d(videos, batch_size=2)
    assert rows.shape == (3, 6) and rows.dtype == torch.float64
    torch.testing.assert_close(rows[1:2], i3d(videos[1:2]))


def test_resize_video_squashes_each_frame():
    video = torch.zeros(1, 3, 2, 10, 20)
    video[:, :, 1] = 1.0
    out = resize_video(video, 8)
    assert out.shape == (1, 3, 2, 8, 8)
    assert out[:, :, 0].abs().max() == 0 and torch.allclose(out[:, :, 1], torch.ones(1, 3, 8, 8))


def test_fvd_plumbing_zero_for_the_real_set_and_positive_otherwise(i3d_file):
    i3d = I3DFeatures.load(i3d_file)
    g = torch.Generator().manual_seed(1)
    real = [i3d(torch.rand(1, 3, 6, 16, 16, generator=g) * 2 - 1)[0].numpy() for _ in range(4)]
    fake = [r + 0.5 for r in real]
    same, reason = set_metrics(real, real)
    assert reason == "" and same["fvd"] == pytest.approx(0, abs=1e-9) and same["kvd"] < 0.05
    shifted, _ = set_metrics(fake, real)
    assert shifted["fvd"] == pytest.approx(6 * 0.25, rel=1e-6)  # a pure shift: |Δμ|² = 6 x 0.5²
    assert shifted["kvd"] > same["kvd"]
    none, reason = set_metrics(real[:1], real[:1])
    assert none == {"fvd": None, "kvd": None} and "two clips" in reason
    assert np.isfinite(shifted["fvd"])


def test_finding_the_i3d_file(tmp_path, monkeypatch, i3d_file):
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("TOONCTL_I3D", raising=False)
    missing = find_i3d()
    assert missing.path is None and "never downloaded" in missing.reason and "--i3d" in missing.reason
    monkeypatch.setenv("TOONCTL_I3D", str(i3d_file))
    assert find_i3d().path == i3d_file
    assert "no I3D file at" in find_i3d(tmp_path / "nope.pt").reason


def test_a_file_that_is_not_torchscript_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "i3d.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="cannot load the I3D TorchScript file"):
        I3DFeatures.load(bad)
