"""CLIP alignment and aesthetic scores with the tiny-a towers: values, thresholds, cache, head file checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from toonctl.config import load_config
from toonctl.dataset import store
from toonctl.dataset.build import build_dataset
from toonctl.dataset.scoring import ScoreSettings, load_head
from toonctl.dataset.settings import BuildSettings
from toonctl.errors import DataError
from toonctl.io.clips import read_manifest
from toonctl.models.clip_scoring import CLIPScorer

TINY_A = Path(__file__).parents[1] / "fixtures" / "tiny-a"
WEIGHTS = str(TINY_A / "model.safetensors")


@pytest.fixture
def head(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "head.safetensors"
    save_file({"weight": torch.randn(1, 16), "bias": torch.tensor([0.5])}, path)
    return path


def _scores(root):
    return {r["clip"] + r["episode"]: r for r in map(json.loads, (root / store.SCORES).read_text().splitlines())}


def test_scores_match_a_direct_clip_computation_and_thresholds_drop(episodes, head, tmp_path, monkeypatch):
    root = tmp_path / "scored"
    settings = BuildSettings(prompt="a cartoon")
    scoring = ScoreSettings(weights=WEIGHTS, aesthetic_head=str(head))
    stages = []
    result = build_dataset([episodes / "ep1.mp4"], root, settings, scoring=scoring, on_progress=stages.append)
    assert result.summary["scores"]["computed"] == ["alignment", "aesthetic"]
    assert [(p.stage, p.done, p.total) for p in stages] == [("episodes", 1, 1), ("scores", 1, 1)]
    kept = [c for c in read_manifest(root / "manifest.csv")]
    assert len(kept) == 2 and all({"alignment", "aesthetic"} <= set(c.extra) for c in kept)

    scorer = CLIPScorer.from_checkpoint(WEIGHTS, load_config(TINY_A / "config.yaml"))
    (key,) = [p["episode"] for p in store.iter_parts(root)]
    samples = store.read_samples(root, key)
    weight, bias, _ = load_head(head)
    for clip in ("0000-00", "0002-00"):
        images = torch.from_numpy(samples[clip]).permute(0, 3, 1, 2).float() / 127.5 - 1
        cosines = scorer.image_text_similarity(images, "a white ball crosses a red room").numpy()
        row = _scores(root)[clip + key]
        assert row["scores"]["alignment"] == pytest.approx(cosines.mean(), abs=1e-4)
        assert row["scores"]["alignment_min"] == pytest.approx(cosines.min(), abs=1e-4)
        aesthetic = (scorer.embed_images(images).numpy() @ weight + bias).mean()
        assert row["scores"]["aesthetic"] == pytest.approx(aesthetic, abs=1e-4)
    assert (root / "report" / "alignment.png").is_file() and (root / "report" / "aesthetic.png").is_file()

    # A threshold above every cosine drops every clip; the scores come from the cache (no model is loaded).
    monkeypatch.setattr(CLIPScorer, "from_checkpoint", None)
    cached = ScoreSettings(weights=WEIGHTS, aesthetic_head=str(head), min_alignment=1.01)
    again = build_dataset([episodes / "ep1.mp4"], root, settings, scoring=cached)
    assert again.summary["dropped"]["alignment"] == 2 and again.summary["kept"] == 0
    assert again.summary["filters"]["alignment"] == "drops alignment < 1.01"


def test_scores_are_off_unless_asked(built):
    summary = json.loads((built / "report" / "summary.json").read_text())
    assert summary["scores"]["computed"] == []
    assert summary["filters"]["alignment"].startswith("off")
    assert "none computed" in (built / "report" / "README.md").read_text()


def test_head_files_are_checked(tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(2, 16), "bias": torch.zeros(2)}, bad)
    with pytest.raises(DataError, match="not a linear layer to one score"):
        load_head(bad)
    nested = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(16, 1).state_dict(), nested)
    weight, bias, digest = load_head(nested)
    assert weight.shape == (16,) and isinstance(bias, float) and len(digest) == 12
    other = tmp_path / "other.pt"
    torch.save({"layers.0.weight": torch.ones(1, 16), "layers.0.bias": torch.zeros(1)}, other)
    assert np.allclose(load_head(other)[0], 1)
