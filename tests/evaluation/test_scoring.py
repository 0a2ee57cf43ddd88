"""The per-clip scores: identical frames score perfectly, the key frames are left out, missing heads are explained."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import save_file

from conftest import TINY_A, draw_key
from toonctl.evaluation.scoring import PSNR_CAP_DB, MetricSuite


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    return np.stack(
        [np.asarray(Image.open(draw_key(folder / f"{i}.png", 4 + 6 * i, size=(64, 96)))) for i in range(5)]
    )


@pytest.fixture(scope="module")
def suite(tiny_config, tmp_path_factory):
    empty = tmp_path_factory.mktemp("no-lpips")
    return MetricSuite.load(lpips_dir=empty, clip_weights=TINY_A / "model.safetensors", clip_config=tiny_config)


def test_identical_frames_score_perfectly(suite, window):
    ref = suite.reference(window, "a ball")
    row = suite.score(window, window.copy(), "a ball", ref)
    assert row["psnr"] == PSNR_CAP_DB and row["ssim"] == pytest.approx(1.0)
    assert row["clip_img"] == pytest.approx(1.0, abs=1e-5)
    assert row["clip_txt"] == pytest.approx(ref["clip_txt"]) and row["cpbd"] == ref["cpbd"]
    assert row["lpips"] is None and "lpips" in suite.unavailable


def test_only_the_in_betweens_are_scored(suite, window):
    ref = suite.reference(window, "")
    other = window.copy()
    other[[0, -1]] = 0  # the key frames do not count
    row = suite.score(window, other, "", ref)
    assert row["psnr"] == PSNR_CAP_DB and row["clip_txt"] is None and ref["clip_txt"] is None
    other[2] = 255 - other[2]
    assert suite.score(window, other, "", ref)["psnr"] < PSNR_CAP_DB


def test_a_checkpoint_without_the_clip_heads_is_explained(tiny_config, tiny_state_dict, tmp_path):
    pruned = {k: v for k, v in tiny_state_dict.items() if "text_projection" not in k}
    save_file(pruned, tmp_path / "pruned.safetensors")
    suite = MetricSuite.load(lpips_dir=tmp_path, clip_weights=tmp_path / "pruned.safetensors", clip_config=tiny_config)
    assert suite.clip is None
    assert "projection head" in suite.unavailable["clip_img"] and "--clip-weights" in suite.unavailable["clip_txt"]


def test_lpips_from_local_weight_files(tiny_config, tmp_path, window):
    """Random weights in the two files' layouts: the column fills in, 0 for identical frames."""
    import torch

    from toonctl.metrics import ALEXNET_FILE, LPIPS, LPIPS_LINEAR_FILE

    torch.manual_seed(0)
    model = LPIPS()
    backbone = {
        f"features.{i}.{p}": getattr(conv, p).detach().abs()
        for i, conv in model.features.items()
        for p in ("weight", "bias")
    }
    torch.save(backbone, tmp_path / ALEXNET_FILE)
    torch.save(
        {f"lin{i}.model.1.weight": lin.weight.detach().abs() for i, lin in enumerate(model.lins)},
        tmp_path / LPIPS_LINEAR_FILE,
    )
    suite = MetricSuite.load(lpips_dir=tmp_path)
    assert "lpips" not in suite.unavailable and "clip_img" in suite.unavailable
    ref = suite.reference(window, "")
    assert suite.score(window, window.copy(), "", ref)["lpips"] == pytest.approx(0.0, abs=1e-9)
    assert suite.score(window, 255 - window, "", ref)["lpips"] > 0
