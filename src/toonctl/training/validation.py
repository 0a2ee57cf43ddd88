"""Validation during training: interpolate fixed key pairs with the model being trained and write a grid.

Each validation item is a clip's first and last frame of a fixed 16-frame window (the clip's start, the
largest stride in the run's range that fits), its caption and its ``fs``. Every ``--validation-every`` steps
the pipeline interpolates each pair with few DDIM steps and a fixed seed, and ``RUN/validation/step-N.gif``
shows, per item, the ground-truth window (top) above the interpolation (bottom), items side by side. The
fixed seed makes successive grids differ only by what training changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from toonctl.errors import DataError
from toonctl.io.clips import ClipRecord, clip_fps, clip_frame_count, read_clip_frames
from toonctl.training.data import DataSettings, Window, fitting_stride, frame_rate_condition, frames_to_tensor

VALIDATION_SEED = 1234


@dataclass
class ValidationItem:
    """``video``: ``(3, T, H, W)`` in [-1, 1], the ground truth; its first and last frame are the keys."""

    video: torch.Tensor
    prompt: str
    fs: int
    path: str


def validation_items(records: Sequence[ClipRecord], settings: DataSettings, count: int) -> list[ValidationItem]:
    """The first ``count`` usable clips of ``records`` as validation items (unusable ones are passed over)."""
    items: list[ValidationItem] = []
    for record in records:
        if len(items) >= count:
            break
        try:
            frames = clip_frame_count(record)
            stride = fitting_stride(frames, settings.num_frames, settings.stride[1])
            if stride == 0:
                continue
            window = Window(0, stride, settings.num_frames)
            video = frames_to_tensor(read_clip_frames(record, window.indices), settings)
        except DataError:
            continue
        fs = frame_rate_condition(clip_fps(record), stride, settings.default_fps)
        items.append(ValidationItem(video, record.caption, fs, str(record.path)))
    return items


def grid_frames(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """``[(truth, generated)]``, each ``(3, T, H, W)`` -> ``(T, 2H, N*W, 3)`` uint8: truth above generated."""
    from toonctl.io.video import to_uint8

    columns = [torch.cat([truth, generated.to(truth.device)], dim=2) for truth, generated in pairs]  # (3,T,2H,W)
    grid = torch.cat(columns, dim=3)  # (3, T, 2H, N*W)
    return to_uint8(grid.transpose(0, 1))  # (T, 2H, N*W, 3)


def write_grid(frames: np.ndarray, folder: Path, step: int, *, fps: float = 8.0) -> Path:
    from toonctl.io.video import write_frames

    folder.mkdir(parents=True, exist_ok=True)
    return write_frames(frames, folder / f"step-{step:07d}.gif", fps=fps)
