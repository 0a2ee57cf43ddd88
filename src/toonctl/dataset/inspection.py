"""``toonctl dataset inspect``: what a dataset holds, read the way ``toonctl train`` reads it.

The clips come from ``toonctl.io.clips.discover_clips`` (the manifest); the counts, total duration and
the distributions of the manifest's numeric columns (drawing rate, flow, scores, ...) are computed from
it, and with ``decode`` every clip's first and last frame is decoded to find the clips that fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toonctl.errors import DataError
from toonctl.io.clips import ClipRecord, clip_fps, clip_frame_count, discover_clips, read_clip_frames

NON_MEASURES = ("episode", "source_start", "source_end")


def inspect_dataset(root: Path, *, decode: bool = True, on_clip: Callable[[int, int], None] | None = None) -> dict:
    """A summary of the dataset at ``root`` (a folder with a manifest, or a manifest file).

    Returns:
        ``{"clips", "episodes", "seconds", "frames", "empty_captions", "drawing_rates", "columns": {name:
        {"min", "median", "max", "mean"}}, "failed": [{"path", "error"}]}``.

    Raises:
        DataError: no manifest, or an unreadable one.
    """
    records = discover_clips([root])
    if not records:
        raise DataError(f"{root} holds no clips")
    frames = [_frames(r) for r in records]
    seconds = sum(n / (r.fps or 0) for r, n in zip(records, frames, strict=True) if n and r.fps)
    failed = []
    if decode:
        for index, record in enumerate(records, start=1):
            error = check_clip(record)
            if error:
                failed.append({"path": str(record.path), "start": record.start, "end": record.end, "error": error})
            if on_clip:
                on_clip(index, len(records))
    return {
        "dataset": str(root),
        "clips": len(records),
        "episodes": len({r.extra.get("episode", str(r.path)) for r in records}),
        "frames": int(sum(n for n in frames if n)),
        "seconds": round(seconds, 2),
        "empty_captions": sum(not r.caption for r in records),
        "drawing_rates": dict(
            sorted(
                Counter(r.extra["drawing_rate"] for r in records if "drawing_rate" in r.extra).items(),
                key=lambda kv: float(kv[0]),
            )
        ),
        "columns": _distributions(records),
        "decoded": decode,
        "failed": failed,
    }


def _frames(record: ClipRecord) -> int | None:
    return record.end - record.start if record.end is not None else None


def check_clip(record: ClipRecord) -> str | None:
    """None if the clip's first and last frames decode (and its frame rate is known), else why not."""
    try:
        count = clip_frame_count(record)
        if count <= 0:
            return "no frames"
        if record.end is not None and count < record.end - record.start:
            return f"has {count} frames, the manifest says {record.end - record.start}"
        read_clip_frames(record, [0, count - 1])
        if not clip_fps(record):
            return "unknown frame rate"
    except DataError as exc:
        return str(exc)
    return None


def _distributions(records: list[ClipRecord]) -> dict:
    columns: dict[str, list[float]] = {}
    for record in records:
        for name, text in record.extra.items():
            if name in NON_MEASURES:
                continue
            try:
                columns.setdefault(name, []).append(float(text))
            except ValueError:
                continue
    out = {}
    for name, values in columns.items():
        array = np.asarray([v for v in values if np.isfinite(v)])
        if len(array):
            out[name] = {
                "min": _round(array.min()),
                "median": _round(np.median(array)),
                "max": _round(array.max()),
                "mean": _round(array.mean()),
            }
    return out


def _round(value) -> float:
    return float(f"{float(value):.4g}")
