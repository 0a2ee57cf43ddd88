"""Generated clips kept in the report folder, so an interrupted or repeated evaluation resumes.

Each clip's frames are stored as ``<report>/clips/<clip id>/<engine>.npz``: ``frames`` ``(T, H, W, 3)``
uint8 and ``meta`` (JSON text: the engine's fingerprint and the window's settings). An entry is reused only
when its ``meta`` equals what the run would generate now; otherwise it is made again. Files are written under
a temporary name and renamed, so an interrupted run never leaves a truncated entry.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from toonctl.io.atomic import write_bytes_atomic


def entry_path(root: Path, clip_id: str, engine: str) -> Path:
    """``root/clips/<clip id>/<engine>.npz``, the engine name made safe (``toonctl:ft`` -> ``toonctl_ft``)."""
    return Path(root) / "clips" / clip_id / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', engine)}.npz"


def load(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, float | None] | None:
    """``(frames, seconds it took)`` when ``path`` exists and was made with exactly ``meta``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["meta"]))
            frames = data["frames"]
            seconds = float(data["seconds"]) if "seconds" in data else float("nan")
    except (OSError, ValueError, KeyError, EOFError):  # unreadable or foreign file: make it again
        return None
    if stored != json.loads(json.dumps(meta)) or frames.dtype != np.uint8 or frames.ndim != 4:
        return None
    return frames, None if np.isnan(seconds) else seconds


def store(path: Path, frames: np.ndarray, meta: dict[str, Any], seconds: float | None = None) -> None:
    """Write ``frames`` (``(T, H, W, 3)`` uint8), ``meta`` and the generation time to ``path`` atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        meta=np.array(json.dumps(meta)),
        seconds=np.array(float("nan") if seconds is None else seconds),
    )
    write_bytes_atomic(path, buffer.getvalue())
