"""The engines: blend is its definition, RIFE's plumbing (padding, bisection, weight loading), names."""

from __future__ import annotations

import pytest
import torch

from toonctl.errors import CheckpointError
from toonctl.evaluation.engines import BlendEngine, checkpoint_labels, parse_engine_names
from toonctl.evaluation.rife import IFNet, RifeEngine, find_rife_weights, load_rife_engine


def test_blend_is_the_linear_cross_fade():
    g = torch.Generator().manual_seed(0)
    keys = torch.rand(2, 3, 8, 12, generator=g) * 2 - 1
    video = BlendEngine().interpolate(keys, num_frames=6)
    assert video.shape == (6, 3, 8, 12)
    for k in range(6):
        t = k / 5
        torch.testing.assert_close(video[k], (1 - t) * keys[0] + t * keys[1], atol=1e-6, rtol=0)
    assert torch.equal(video[0], keys[0]) and torch.equal(video[-1], keys[1])


def test_engine_names_and_checkpoint_labels():
    assert parse_engine_names("blend, toonctl,blend") == ["blend", "toonctl"]
    with pytest.raises(ValueError, match="unknown engine film"):
        parse_engine_names("film")
    from pathlib import Path

    assert checkpoint_labels([Path("a/model.ckpt")]) == ["toonctl"]
    assert checkpoint_labels([Path("a/base.ckpt"), Path("b/ft.safetensors")]) == ["toonctl:base", "toonctl:ft"]
    assert checkpoint_labels([Path("w/model.ckpt"), Path("ft/model.safetensors"), Path("w/model.pt")]) == [
        "toonctl:w/model", "toonctl:ft/model", "toonctl:w/model#3",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def rife_file(tmp_path_factory):
    """A random RIFE HDv3 flownet saved as the original training code saves it (``module.`` prefix, teacher)."""
    torch.manual_seed(0)
    net = IFNet()
    state = {f"module.{k}": v * 0.1 for k, v in net.state_dict().items()}
    state["module.block_tea.conv0.0.0.weight"] = torch.zeros(1)
    path = tmp_path_factory.mktemp("rife") / "flownet.pkl"
    torch.save(state, path)
    return path


def test_rife_engine_pads_bisects_and_keeps_the_keys(rife_file):
    engine, reason = load_rife_engine(rife_file)
    assert reason == "" and isinstance(engine, RifeEngine)
    keys = torch.rand(2, 3, 40, 50) * 2 - 1  # not multiples of 32: padded, then cropped back
    video = engine.interpolate(keys, num_frames=3)
    assert video.shape == (3, 3, 40, 50)
    torch.testing.assert_close(video[0], keys[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(video[-1], keys[1], atol=1e-6, rtol=0)
    # the middle frame (t = 1/2) is one pass of the network on the padded keys
    padded = torch.nn.functional.pad((keys + 1) / 2, (0, 14, 0, 24), mode="replicate")
    with torch.no_grad():
        middle = engine.model(padded[:1], padded[1:])[..., :40, :50] * 2 - 1
    torch.testing.assert_close(video[1], middle[0].clamp(-1, 1), atol=1e-6, rtol=0)
    assert engine.interpolate(keys, num_frames=6).shape == (6, 3, 40, 50)


def test_rife_bisection_reuses_midpoints(rife_file):
    engine, _ = load_rife_engine(rife_file)
    calls = []
    forward = engine.model.forward
    engine.model.forward = lambda a, b: calls.append(1) or forward(a, b)
    engine.interpolate(torch.zeros(2, 3, 32, 32), num_frames=5)  # t = 1/4, 1/2, 3/4: three midpoints
    assert len(calls) == 3


def test_rife_weights_that_are_not_rife_are_a_checkpoint_error(tmp_path):
    bad = tmp_path / "flownet.pkl"
    torch.save({"module.something": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a RIFE HDv3 flownet"):
        IFNet.from_file(bad)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read the RIFE weights"):
        IFNet.from_file(tmp_path / "junk.pkl")


def test_rife_without_the_package_says_how_to_get_it(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    path, reason = find_rife_weights()
    assert path is None and "toonctl[rife]" in reason and "--rife-weights" in reason
    assert load_rife_engine(None) == (None, reason)
