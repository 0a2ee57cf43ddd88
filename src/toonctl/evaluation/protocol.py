"""The evaluation protocol: which frames of a clip are used, at which size, with which fs and seed.

* **Window.** From each clip, the first window of ``num_frames`` frames taken every ``frame_stride`` source
  frames: frames ``0, s, 2s, ..., (T-1)s`` after the clip's start (a manifest's ``start`` column). Its first
  and last frames are the key frames given to every engine; the ``T - 2`` frames between are the ground truth.
  A clip with fewer than ``(T-1)s + 1`` frames is skipped (the report says so).
* **Size.** Every frame is fitted to ``size`` (H, W) as ``toonctl interpolate`` fits key frames (default:
  scale to cover, then centre-crop; PIL bilinear) and quantised to 8 bits; the default size is the model's
  native one (320x512 for ToonCrafter-512).
* **fs.** The model's frame-rate condition is ``fps // stride`` (DynamiCrafter's training data: the frame rate
  of the sampled frames, a float floor), from the manifest's ``fps`` column or the video's own rate; for a
  folder of frames (no rate) the official inference default, 10. ``fs`` fixes it for every clip.
* **Seed.** Each clip gets its own seed, ``SHA-256("{seed}:{file name}:{start}:{stride}")`` read as an
  unsigned integer modulo 2**63, so the numbers of a clip do not depend on which other clips are evaluated,
  and a re-run (on any machine) draws the same noise. Every engine and checkpoint gets the same seed per clip.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from toonctl.errors import DataError
from toonctl.io.clips import ClipRecord, clip_fps, clip_frame_count, read_clip_frames

DEFAULT_FS = 10  # the official inference scripts' --frame_stride


@dataclass(frozen=True)
class Window:
    """One clip's evaluation window.

    Attributes:
        clip: the clip.
        clip_id: a short name, unique per clip path and range (folder names of the cache and the media).
        indices: source frame indices, relative to ``clip.start``.
        fps: the clip's frame rate, or None.
        fs: the model's frame-rate condition for this window.
        seed: this clip's seed.
    """

    clip: ClipRecord
    clip_id: str
    indices: tuple[int, ...]
    fps: float | None
    fs: int
    seed: int

    @property
    def playback_fps(self) -> float:
        """The frame rate of the window's frames (the clip's rate over the stride), 8 when unknown."""
        stride = self.indices[1] - self.indices[0] if len(self.indices) > 1 else 1
        return self.fps / stride if self.fps else 8.0


def clip_id(clip: ClipRecord) -> str:
    """``<name>-<6 hex>``: the file or folder name (made safe for paths) and a hash of its full path and range."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip.path.stem if clip.path.suffix else clip.path.name)[:40] or "clip"
    digest = hashlib.sha256(f"{clip.path.resolve()}:{clip.start}:{clip.end}".encode()).hexdigest()[:6]
    return f"{stem}-{digest}"


def clip_seed(clip: ClipRecord, seed: int, frame_stride: int) -> int:
    """This clip's seed (see the module docstring)."""
    text = f"{seed}:{clip.path.name}:{clip.start}:{frame_stride}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 2**63


def frame_rate_condition(fps: float | None, frame_stride: int, fs: int | None = None) -> int:
    """The fs condition: ``fs`` when given, else ``fps // stride`` (at least 1), else ``DEFAULT_FS``."""
    if fs is not None:
        return fs
    if fps:
        return max(1, int(fps // frame_stride))
    return DEFAULT_FS


def plan_window(clip: ClipRecord, *, num_frames: int, frame_stride: int, seed: int, fs: int | None = None) -> Window:
    """The window of ``clip`` (see the module docstring).

    Raises:
        DataError: the clip is unreadable or too short for the window.
    """
    needed = (num_frames - 1) * frame_stride + 1
    count = clip_frame_count(clip)
    if count < needed:
        raise DataError(
            f"{clip.path}: {count} frame{'s' * (count != 1)}, a window of {num_frames} frames every {frame_stride} "
            f"needs {needed}"
        )
    fps = clip_fps(clip)
    return Window(
        clip=clip,
        clip_id=clip_id(clip),
        indices=tuple(range(0, needed, frame_stride)),
        fps=fps,
        fs=frame_rate_condition(fps, frame_stride, fs),
        seed=clip_seed(clip, seed, frame_stride),
    )


def read_window(window: Window, size: tuple[int, int], fit: str = "crop") -> np.ndarray:
    """The window's frames fitted to ``size`` = (H, W): ``(T, H, W, 3)`` uint8 RGB."""
    from PIL import Image

    from toonctl.io.frames import fit_image

    frames = read_clip_frames(window.clip, window.indices)
    fitted = [np.asarray(fit_image(Image.fromarray(f), size, fit)) for f in frames]
    return np.stack(fitted)
