"""Shot boundaries, clip planning, held drawings and the static measure on the synthetic footage."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.synthetic import FPS, SHOT_FRAMES, episode_frames
from toonctl.dataset.holds import changed_fractions, drawing_stats
from toonctl.dataset.motion import mean_flow
from toonctl.dataset.settings import HOLD_FRACTION, MIN_FLOW, BuildSettings
from toonctl.dataset.shots import detect_shots, plan_clips


def test_shots_are_found_at_the_cuts(episodes):
    shots = detect_shots(episodes / "ep1.mp4", FPS, BuildSettings())
    assert len(shots) == 3
    for (start, _end), cut in zip(shots, (0, SHOT_FRAMES, 2 * SHOT_FRAMES), strict=True):
        assert abs(start - cut) <= 1
    assert shots[0][0] == 0 and shots[-1][1] == 3 * SHOT_FRAMES
    assert all(a[1] == b[0] for a, b in zip(shots, shots[1:], strict=False))  # they tile the episode


def test_long_shots_are_cut_into_clips_and_short_ones_marked():
    settings = BuildSettings(min_shot=1.0, max_shot=3.0, clip_length=2.0)  # 12, 36 and 24 frames at 12 fps
    plans = plan_clips([(0, 6), (6, 20), (20, 56), (56, 114)], 12.0, settings)
    assert [(p.start, p.end, p.short) for p in plans] == [
        (0, 6, True),  # 0.5 s < min_shot
        (6, 20, True),  # 14 frames: over 1 s, but under the 16 frames of a training window
        (20, 56, False),  # 3 s: kept whole
        (56, 80, False),  # 58 frames > 36: cut into 24-frame clips...
        (80, 104, False),
        (104, 114, True),  # ...and a 10-frame leftover, too short
    ]
    assert [p.name for p in plans[3:]] == ["0003-00", "0003-01", "0003-02"]


def _gray(kind: str) -> np.ndarray:
    rgb = episode_frames((kind,))
    return (rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)  # (T, H, W)


@pytest.mark.parametrize(("kind", "rate", "distinct"), [("moving", 1, 24), ("twos", 2, 12), ("static", 24, 1)])
def test_drawing_rate_and_distinct_drawings(kind, rate, distinct):
    stats = drawing_stats(changed_fractions(_gray(kind)), HOLD_FRACTION)
    assert (stats.rate, stats.distinct, stats.frames) == (rate, distinct, SHOT_FRAMES)
    assert stats.duplicate_rate == pytest.approx(1 - distinct / SHOT_FRAMES)


def test_static_shot_has_no_flow_and_moving_shots_clear_the_threshold():
    flows = {}
    for kind in ("moving", "twos", "static"):
        gray = _gray(kind)
        flows[kind] = mean_flow(gray, changed_fractions(gray) < HOLD_FRACTION, max_pairs=32)
    assert flows["static"] == 0.0
    assert flows["moving"] > 4 * MIN_FLOW and flows["twos"] > 4 * MIN_FLOW
