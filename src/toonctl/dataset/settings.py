"""The settings of ``toonctl dataset build``: every threshold in one place, with what it measures and why.

The paper (§3.2) gives no threshold; these defaults were measured on the synthetic episodes of
``tests/dataset`` (flat colour scenes, 96x64 at 12 fps) and must be tuned on real footage (README,
"toonctl dataset"). A dataset folder keeps the settings it was built with (``build.json``): a re-run
with other settings is refused rather than mixing clips made two ways.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from toonctl.errors import DataError

# PySceneDetect's ContentDetector score: the mean change of hue, saturation and luma (and edges, weight 0)
# between consecutive frames, 0-255. Its default, 27, is kept: on the synthetic episodes a panning backdrop
# and a moving disc score at most 11 inside a shot, and every hard cut scores 38 or more.
CUT_THRESHOLD = 27.0
# A pixel "changed" between two frames when its grey level moved by more than this (0-255).
CHANGE_LEVEL = 10
# Two consecutive frames are the same drawing (a held frame) when under this fraction of their pixels
# changed, at the analysis width. Synthetic: a held frame of an H.264 file changes 0 pixels, the smallest
# motion (a 10-px disc moving 4 px on 96x64) changes 2.5%.
HOLD_FRACTION = 0.002
# Mean optical-flow magnitude, in pixels per frame at a 256-px-wide frame, under which a clip is static.
# Synthetic: the still shot measures 0.0, a disc on twos 3.1, a slow pan with a disc 3.9.
MIN_FLOW = 0.25
# Width of the grey frames that the hold, flow and text measures see (frames are never upscaled).
ANALYSIS_WIDTH = 256
FLOW_REFERENCE_WIDTH = 256
# Fraction of a frame covered by text-like boxes over which a clip is dropped (text filter on).
MAX_TEXT = 0.05
# Fewest frames of a clip whatever its length in seconds: the model trains on 16-frame windows, and
# ``toonctl train`` skips shorter clips.
MIN_FRAMES = 16


@dataclass(frozen=True)
class BuildSettings:
    """How episodes become clips.

    Attributes:
        cut_threshold: ContentDetector threshold (see ``CUT_THRESHOLD``).
        min_cut_gap: seconds; the detector reports no second cut within this time of the last one.
        min_shot: seconds; shorter shots (and shorter leftovers of cut shots) are dropped ("short").
        min_frames: frames; the same, counted in frames (see ``MIN_FRAMES``).
        max_shot: seconds; a longer shot is cut into clips of ``clip_length`` seconds.
        clip_length: seconds; the length of the clips a long shot is cut into.
        hold_fraction: see ``HOLD_FRACTION``.
        min_flow: see ``MIN_FLOW``; 0 turns the static filter off.
        flow_pairs: at most this many frame pairs per clip get an optical flow (evenly spread).
        text_detector: None (text filter off), ``"heuristic"``, or a command run as ``COMMAND IMAGE.png``
            that prints the fraction of the image covered by text.
        max_text: see ``MAX_TEXT``.
        copy: True: one mp4 per clip; False: the manifest points into the episode files (start/end frames).
        crf: x264 quality of the clip files (17: visually lossless).
        prompt: caption of clips without a CSV row or a sidecar file.
        captions_csv: CSV of captions (columns ``episode, caption`` and optional ``start, end`` frames).
    """

    cut_threshold: float = CUT_THRESHOLD
    min_cut_gap: float = 0.25
    min_shot: float = 1.0
    min_frames: int = MIN_FRAMES
    max_shot: float = 10.0
    clip_length: float = 5.0
    hold_fraction: float = HOLD_FRACTION
    min_flow: float = MIN_FLOW
    flow_pairs: int = 32
    text_detector: str | None = None
    max_text: float = MAX_TEXT
    copy: bool = True
    crf: int = 17
    prompt: str = ""
    captions_csv: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_shot <= self.max_shot:
            raise DataError(f"need 0 < --min-shot ({self.min_shot}) <= --max-shot ({self.max_shot})")
        if not self.min_shot <= self.clip_length <= self.max_shot:
            raise DataError(
                f"--clip-length ({self.clip_length}) must lie between --min-shot ({self.min_shot})"
                f" and --max-shot ({self.max_shot})"
            )

    def min_clip_frames(self, fps: float) -> int:
        """Frames a clip needs at ``fps`` (``min_shot`` seconds and ``min_frames``)."""
        return max(1, self.min_frames, round(self.min_shot * fps))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BuildSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: BuildSettings) -> list[str]:
        """``["name: ours vs theirs", ...]`` for every setting that differs."""
        mine, theirs = self.to_json(), other.to_json()
        return [f"{k}: {theirs[k]!r} vs {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def read_settings(path: Path) -> BuildSettings | None:
    """The settings stored in ``build.json`` (None when there is none)."""
    if not path.is_file():
        return None
    try:
        return BuildSettings.from_json(json.loads(path.read_text(encoding="utf-8"))["settings"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="delete it to start the dataset afresh") from None
