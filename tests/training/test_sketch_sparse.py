"""The sparse sketch pattern: the documented bisection sets, the key-frame choices, the mixture frequencies."""

from __future__ import annotations

import pytest
import torch

from toonctl.training.sparse_sketches import (
    BISECTION,
    RANDOM,
    SparsePattern,
    bisection_frames,
    draw_hint_mask,
    draw_sketch_frames,
)


@pytest.mark.parametrize(
    ("depth", "frames"),
    [
        (1, {7}),
        (2, {3, 7, 11}),
        (3, {1, 3, 5, 7, 9, 11, 13}),
        (4, set(range(1, 15))),
    ],
)
def test_bisection_sets_at_16_frames(depth, frames):
    assert set(bisection_frames(16, depth)) == frames
    # the paper's sets, 1-indexed: {8}, {4, 8, 12}, {2, 4, ..., 14}; depth 4 is every in-between
    one_indexed = {f + 1 for f in frames}
    assert one_indexed == {1: {8}, 2: {4, 8, 12}, 3: set(range(2, 16, 2)), 4: set(range(2, 16))}[depth]


def test_bisection_never_picks_key_frames_and_saturates():
    for t in (3, 5, 8, 16, 17):
        for depth in range(8):
            frames = bisection_frames(t, depth)
            assert 0 not in frames and t - 1 not in frames
    assert bisection_frames(8, 10) == tuple(range(1, 7))
    assert bisection_frames(16, 0) == ()


def test_mixture_frequencies_and_depths():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_sketch_frames(16, generator) for _ in range(4000)]
    kinds = [d.kind for d in draws]
    share = kinds.count(BISECTION) / len(draws)
    assert abs(share - 0.8) < 0.03  # 4000 draws: std 0.0063
    depths = [d.depth for d in draws if d.kind == BISECTION]
    for depth in range(1, 5):
        assert abs(depths.count(depth) / len(depths) - 0.25) < 0.04
    for d in draws:
        if d.kind == BISECTION:
            assert d.frames == bisection_frames(16, d.depth)
    subsets = [d.frames for d in draws if d.kind == RANDOM]
    assert all(1 <= len(s) <= 14 and 0 not in s and 15 not in s for s in subsets)
    assert len(set(subsets)) > 0.6 * len(subsets)  # random, not a few fixed patterns (sizes 1, 13, 14 repeat)
    sizes = torch.tensor([len(s) for s in subsets], dtype=torch.float64)
    assert abs(sizes.mean().item() - 7.5) < 0.6  # size ~ U[1, 14]


def test_draws_replay_from_the_generator_and_keyframes_option():
    a = draw_hint_mask(4, 16, torch.Generator().manual_seed(3))
    b = draw_hint_mask(4, 16, torch.Generator().manual_seed(3))
    assert a.dtype == torch.bool and a.shape == (4, 16) and torch.equal(a, b)
    assert a.any(dim=1).all()
    only_random = SparsePattern(bisection_prob=0.0, include_keyframes=True)
    generator = torch.Generator().manual_seed(1)
    picked = set()
    for _ in range(300):
        picked |= set(draw_sketch_frames(16, generator, only_random).frames)
    assert {0, 15} <= picked
    with pytest.raises(ValueError):
        SparsePattern(bisection_prob=1.5)
    with pytest.raises(ValueError, match="no in-between"):
        draw_sketch_frames(2)
