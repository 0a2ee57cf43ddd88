"""Shots of an episode (PySceneDetect's content detector) and the clips they are cut into.

``detect_shots`` returns ``[start, end)`` frame ranges covering the episode. ``plan_clips`` then keeps
shots of ``min_shot`` to ``max_shot`` seconds whole, cuts longer ones into clips of ``clip_length``
seconds (a leftover under ``min_shot`` is dropped as "short"), and drops shorter shots as "short"
(``min_shot`` seconds and ``min_frames`` frames: a clip needs both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toonctl.dataset import deps
from toonctl.dataset.probe import EpisodeError
from toonctl.dataset.settings import BuildSettings


@dataclass(frozen=True)
class ClipPlan:
    """Frames ``[start, end)`` of an episode: piece ``piece`` of shot ``shot``; ``short``: too short to keep."""

    shot: int
    piece: int
    start: int
    end: int
    short: bool = False

    @property
    def name(self) -> str:
        return f"{self.shot:04d}-{self.piece:02d}"

    @property
    def frames(self) -> int:
        return self.end - self.start


def detect_shots(path: Path, fps: float, settings: BuildSettings) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: consecutive shots covering the episode's frames ``[0, N)``.

    PySceneDetect decodes the file itself (OpenCV) and its count N is the episode's (the clips are then
    decoded by ffmpeg: frames it cannot reach leave their clips short).

    Raises:
        EpisodeError: PySceneDetect cannot read the video, or it has no frames.
    """
    scenedetect = deps.scenedetect()
    gap = max(1, round(settings.min_cut_gap * fps))
    detector = scenedetect.ContentDetector(threshold=settings.cut_threshold, min_scene_len=gap)
    try:
        scenes = scenedetect.detect(str(path), detector, start_in_scene=True)
    except Exception as exc:  # VideoOpenFailure and OpenCV errors: the episode is skipped with the reason
        raise EpisodeError(f"{path}: PySceneDetect cannot read it ({exc})") from None
    if not scenes or _frame(scenes[-1][1]) <= 0:
        raise EpisodeError(f"{path}: no video frames")
    frame_count = _frame(scenes[-1][1])
    cuts = sorted({_frame(start) for start, _ in scenes} - {0})
    bounds = [0, *(c for c in cuts if 0 < c < frame_count), frame_count]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _frame(timecode) -> int:
    """A FrameTimecode's frame number (``frame_num`` in PySceneDetect 0.7, ``get_frames()`` before)."""
    number = getattr(timecode, "frame_num", None)
    return int(number if number is not None else timecode.get_frames())


def plan_clips(shots: list[tuple[int, int]], fps: float, settings: BuildSettings) -> list[ClipPlan]:
    """The clips of ``shots`` (see the module docstring), in frame order."""
    min_frames = settings.min_clip_frames(fps)
    max_frames = max(min_frames, round(settings.max_shot * fps))
    clip_frames = max(min_frames, round(settings.clip_length * fps))
    plans = []
    for shot, (start, end) in enumerate(shots):
        if end - start <= max_frames:
            plans.append(ClipPlan(shot, 0, start, end, short=end - start < min_frames))
            continue
        for piece, first in enumerate(range(start, end, clip_frames)):
            last = min(first + clip_frames, end)
            plans.append(ClipPlan(shot, piece, first, last, short=last - first < min_frames))
    return plans
