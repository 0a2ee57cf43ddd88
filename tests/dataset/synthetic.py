"""Synthetic cartoon episodes for the dataset tests: flat coloured scenes with hard cuts.

Every episode is 96x64 px at 12 fps. ``SHOTS`` describes the default one (three shots of 24 frames):

* ``moving``: a red scene whose striped backdrop pans 1 px a frame and a disc crosses it (drawn on ones);
* ``static``: a green scene that does not move at all (the static filter must drop it);
* ``twos``: a blue scene whose disc moves 4 px every other frame (drawn on twos: drawing rate 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toonctl.io.video import write_frames

WIDTH, HEIGHT, FPS = 96, 64, 12
SHOT_FRAMES = 24
SHOTS = ("moving", "static", "twos")
CAPTION = "a white ball crosses a red room"  # the caption sidecar of the tests' ep1.mp4
BACKGROUNDS = {"moving": (200, 40, 40), "static": (40, 170, 60), "twos": (40, 60, 200), "pan": (220, 200, 60)}


def _scene(kind: str, step: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 frame of a scene at time ``step`` (frames since the shot began)."""
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[:] = BACKGROUNDS[kind]
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    if kind in ("moving", "pan"):  # a backdrop of wide, faint diagonal stripes panning 1 px a frame
        stripes = ((xs + ys + step) // 16) % 2 == 0
        frame[stripes] = (np.array(BACKGROUNDS[kind]) * 0.85).astype(np.uint8)
    if kind == "static":
        centre_x = 48
    elif kind == "twos":
        centre_x = 12 + 4 * (step // 2)  # a new drawing every other frame
    else:
        centre_x = 12 + 3 * step
    disc = (xs - centre_x) ** 2 + (ys - 32) ** 2 < 10**2
    frame[disc] = (250, 250, 250)
    return frame


def episode_frames(shots=SHOTS, frames_per_shot: int = SHOT_FRAMES) -> np.ndarray:
    """``(len(shots) * frames_per_shot, H, W, 3)`` uint8: the shots one after the other (hard cuts)."""
    return np.stack([_scene(kind, step) for kind in shots for step in range(frames_per_shot)])


def write_episode(path: Path, shots=SHOTS, *, caption: str | None = None, frames_per_shot: int = SHOT_FRAMES) -> Path:
    """Write an episode as an mp4 (and its caption sidecar ``<stem>.txt`` when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_frames(episode_frames(shots, frames_per_shot), path, fps=FPS)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return path
