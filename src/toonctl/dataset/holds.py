"""Held drawings: animation "on twos" shows each drawing for two frames, "on threes" for three.

Two consecutive frames are one drawing when under ``hold_fraction`` of their pixels changed by more than
``CHANGE_LEVEL`` grey levels (exact and near duplicates: codec noise stays under that level). Runs of one
drawing give the clip's distinct-drawing count and its drawing rate (the median run length, rounded;
2 for a clip on twos). Nothing is dropped here: the rate is recorded so training can sample distinct
drawings, and the report shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toonctl.dataset.settings import CHANGE_LEVEL


@dataclass(frozen=True)
class DrawingStats:
    """``frames``: frames in the clip; ``distinct``: drawings; ``rate``: frames per drawing (median run);
    ``duplicate_rate``: the fraction of frames that repeat the previous one, ``1 - distinct / frames``."""

    frames: int
    distinct: int
    rate: int
    duplicate_rate: float


def changed_fractions(gray: np.ndarray, level: int = CHANGE_LEVEL) -> np.ndarray:
    """``(T, H, W)`` uint8 grey frames -> ``(T - 1,)``: fraction of pixels changed by more than ``level``
    between frame ``t`` and ``t + 1``."""
    if len(gray) < 2:
        return np.zeros(0)
    diff = np.abs(np.diff(gray.astype(np.int16), axis=0))  # (T - 1, H, W)
    return (diff > level).mean(axis=(1, 2))


def drawing_stats(changed: np.ndarray, hold_fraction: float) -> DrawingStats:
    """Runs of held frames from ``changed_fractions``; see the module docstring."""
    frames = len(changed) + 1
    new_drawing = changed >= hold_fraction  # (T - 1,) True where frame t + 1 is a new drawing
    boundaries = [0, *(np.flatnonzero(new_drawing) + 1).tolist(), frames]
    runs = np.diff(boundaries)
    # The first and last runs are cut by the shot's edges: leave them out of the median when there are more.
    inner = runs[1:-1] if len(runs) > 2 else runs
    return DrawingStats(
        frames=frames,
        distinct=len(runs),
        rate=max(1, int(np.round(np.median(inner)))),
        duplicate_rate=float(1 - len(runs) / frames),
    )
