"""The whole evaluation: windows, generation (cached), scoring, media, report.

Three passes, so only one large model is in memory at a time:

1. every clip's window is read, fitted and stored (``clips/<id>/real.npz``);
2. each engine in turn makes every clip's window from its key frames (cached: ``clips/<id>/<engine>.npz``),
   then is closed (its model freed);
3. the metric models are loaded and every clip and engine is scored; contact sheets and side-by-side videos
   are written per clip (``clips/<id>/sheet.png``, ``side_by_side.mp4``).

Progress is reported through a callback ``(phase, done, total, label)``; nothing is printed here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toonctl.errors import DataError
from toonctl.evaluation import cache
from toonctl.evaluation.engines import Engine
from toonctl.evaluation.protocol import Window, plan_window, read_window
from toonctl.evaluation.report import REFERENCE, EvalReport
from toonctl.evaluation.scoring import MetricSuite, set_metrics, to_signed
from toonctl.io.clips import ClipRecord

ProgressFn = Callable[[str, int, int, str], None]
CPBD_MIN_SIDE = 64


@dataclass
class EvalOptions:
    """What a run measures and where it writes (see ``toonctl.evaluation.protocol`` for the window)."""

    output: Path
    size: tuple[int, int] = (320, 512)
    num_frames: int = 16
    frame_stride: int = 1
    fs: int | None = None
    fit: str = "crop"
    seed: int = 123
    max_clips: int | None = None
    media: bool = True
    header: dict[str, Any] = field(default_factory=dict)  # extra facts for the report (versions, weights)


def _nothing(phase: str, done: int, total: int, label: str) -> None:
    pass


def plan_windows(
    clips: Sequence[ClipRecord], options: EvalOptions, progress: ProgressFn = _nothing
) -> tuple[list[Window], list[dict[str, Any]]]:
    """The windows of the first ``max_clips`` clips that have one, and the skipped clips with the reason."""
    windows, skipped = [], []
    for i, clip in enumerate(clips):
        if options.max_clips is not None and len(windows) >= options.max_clips:
            break
        progress("checking", i, len(clips), clip.path.name)
        try:
            windows.append(
                plan_window(
                    clip,
                    num_frames=options.num_frames,
                    frame_stride=options.frame_stride,
                    seed=options.seed,
                    fs=options.fs,
                )  # fmt: skip
            )
        except DataError as exc:
            skipped.append({"path": str(clip.path), "status": "skipped", "reason": str(exc)})
    return windows, skipped


def run_evaluation(
    clips: Sequence[ClipRecord],
    engines: Sequence[Engine],
    load_metrics: Callable[[], MetricSuite],
    options: EvalOptions,
    *,
    skipped_engines: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Evaluate ``engines`` on ``clips`` (see the module docstring).

    Raises:
        DataError: no clip has a window of the requested length.
    """
    progress = progress or _nothing
    out = Path(options.output)
    windows, skipped = plan_windows(clips, options, progress)
    progress("checking", len(clips), len(clips), "")
    if not windows:
        reasons = "; ".join(s["reason"] for s in skipped[:3])
        raise DataError(
            f"no clip has the {options.num_frames} frames a window needs" + (f" ({reasons})" if reasons else ""),
            hint="give longer clips, or a smaller --num-frames or --frame-stride",
        )
    report = EvalReport(header=_header(options, windows, engines))
    report.clips = [_clip_entry(win) for win in windows] + skipped
    for name, reason in (skipped_engines or {}).items():
        report.notes.append(f"engine {name} skipped: {reason}")

    real_meta = {win.clip_id: _real_meta(win, options) for win in windows}
    _store_real_windows(windows, real_meta, options, progress)
    _generate_all(engines, windows, real_meta, out, progress)
    _score_all(report, engines, windows, real_meta, load_metrics(), options, progress)
    report.header["clips_evaluated"] = len(windows)
    report.header["clips_skipped"] = len(skipped)
    return report


# ------------------------------------------------------------------------------------------------- passes


def _store_real_windows(windows: list[Window], real_meta: dict, options: EvalOptions, progress: ProgressFn) -> None:
    """Pass 1: every clip's window read, fitted and stored (kept from an earlier run when unchanged)."""
    for i, win in enumerate(windows):
        progress("reading", i, len(windows), win.clip_id)
        path = cache.entry_path(options.output, win.clip_id, REFERENCE)
        if cache.load(path, real_meta[win.clip_id]) is None:
            cache.store(path, read_window(win, options.size, options.fit), real_meta[win.clip_id])
    progress("reading", len(windows), len(windows), "")


def _generate_all(
    engines: Sequence[Engine], windows: list[Window], real_meta: dict, out: Path, progress: ProgressFn
) -> None:
    """Pass 2: each engine in turn makes every window it has not made yet, then frees its model."""
    total, done = len(windows) * len(engines), 0
    for engine in engines:
        try:
            for win in windows:
                progress("generating", done, total, f"{engine.name}: {win.clip_id}")
                _generate(engine, win, out, real_meta[win.clip_id])
                done += 1
        finally:
            engine.close()
    progress("generating", total, total, "")


def _score_all(
    report: EvalReport,
    engines: Sequence[Engine],
    windows: list[Window],
    real_meta: dict,
    suite: MetricSuite,
    options: EvalOptions,
    progress: ProgressFn,
) -> None:
    """Pass 3: the metrics of every clip and engine into ``report``, the media, then FVD and KVD per engine."""
    out = Path(options.output)
    h, w = options.size
    report.unavailable.update(suite.unavailable)
    if min(h, w) < CPBD_MIN_SIDE:
        report.unavailable["cpbd"] = f"frames of {h}x{w} hold no 64x64 block (CPBD's unit); use a larger --size"
    features: dict[str, list[np.ndarray]] = {name: [] for name in [REFERENCE, *(e.name for e in engines)]}
    for i, win in enumerate(windows):
        progress("scoring", i, len(windows), win.clip_id)
        real, _ = cache.load(cache.entry_path(out, win.clip_id, REFERENCE), real_meta[win.clip_id])
        caption = win.clip.caption
        ref = suite.reference(real, caption)
        report.rows.append(_row(win, REFERENCE, {"cpbd": ref["cpbd"], "clip_txt": ref["clip_txt"]}, None))
        if ref["features"] is not None:
            features[REFERENCE].append(ref["features"])
        media_rows = [(REFERENCE, real)]
        for engine in engines:
            frames, seconds = cache.load(
                cache.entry_path(out, win.clip_id, engine.name), _engine_meta(engine, win, real_meta[win.clip_id])
            )
            frames = frames.copy()
            frames[[0, -1]] = real[[0, -1]]  # exact keys: only the in-betweens are the engine's
            report.rows.append(_row(win, engine.name, suite.score(real, frames, caption, ref), seconds))
            vector = suite.features(frames)
            if vector is not None:
                features[engine.name].append(vector)
            media_rows.append((engine.name, frames))
        if options.media:
            _clip_entry_of(report, win).update(_media(out, win, media_rows))
    progress("scoring", len(windows), len(windows), "")
    if suite.i3d is not None:
        for engine in engines:
            scores, reason = set_metrics(features[engine.name], features[REFERENCE])
            report.set_scores[engine.name] = scores
            if reason:
                report.unavailable.setdefault("fvd", reason)
                report.unavailable.setdefault("kvd", reason)


# ------------------------------------------------------------------------------------------------- helpers


def _generate(engine: Engine, win: Window, out: Path, real_meta: dict) -> None:
    meta = _engine_meta(engine, win, real_meta)
    path = cache.entry_path(out, win.clip_id, engine.name)
    if cache.load(path, meta) is not None:
        return
    real, _ = cache.load(cache.entry_path(out, win.clip_id, REFERENCE), real_meta)
    keys = to_signed(real[[0, -1]])
    started = time.perf_counter()
    video = engine.interpolate(keys, num_frames=len(win.indices), prompt=win.clip.caption, fs=win.fs, seed=win.seed)
    seconds = time.perf_counter() - started
    if tuple(video.shape) != (len(win.indices), 3, *real.shape[1:3]):
        raise RuntimeError(f"engine {engine.name} returned frames of shape {tuple(video.shape)}")
    frames = video.float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    cache.store(path, frames, meta, seconds)


def _real_meta(win: Window, options: EvalOptions) -> dict[str, Any]:
    """What the stored real window depends on: the clip (and its file's size and time), range, size, fit."""
    clip = win.clip
    stat = clip.path.stat()
    return {
        "path": str(clip.path.resolve()), "bytes": stat.st_size if clip.path.is_file() else None,
        "mtime_ns": stat.st_mtime_ns, "start": clip.start, "end": clip.end, "indices": list(win.indices),
        "size": list(options.size), "fit": options.fit,
    }  # fmt: skip


def _engine_meta(engine: Engine, win: Window, real_meta: dict) -> dict[str, Any]:
    return {
        "engine": engine.fingerprint(), "window": real_meta, "fs": win.fs, "seed": win.seed,
        "prompt": win.clip.caption,
    }  # fmt: skip


def _clip_entry(win: Window) -> dict[str, Any]:
    clip = win.clip
    return {
        "clip": win.clip_id, "path": str(clip.path), "status": "ok", "caption": clip.caption, "fps": win.fps,
        "start": clip.start, "frames": [clip.start + i for i in win.indices], "fs": win.fs, "seed": win.seed,
    }  # fmt: skip


def _clip_entry_of(report: EvalReport, win: Window) -> dict[str, Any]:
    return next(c for c in report.clips if c.get("clip") == win.clip_id)


def _row(win: Window, engine: str, scores: dict, seconds: float | None) -> dict[str, Any]:
    return {"clip": win.clip_id, "path": str(win.clip.path), "engine": engine, **scores, "seconds": seconds}


def _media(out: Path, win: Window, rows: list[tuple[str, np.ndarray]]) -> dict[str, str]:
    from toonctl.evaluation.media import write_clip_media

    return write_clip_media(out / "clips" / win.clip_id, rows, win.playback_fps)


def _header(options: EvalOptions, windows: list[Window], engines: Sequence[Engine]) -> dict[str, Any]:
    import torch

    from toonctl import __version__

    h, w = options.size
    return {
        "toonctl": __version__, "torch": torch.__version__, "height": h, "width": w,
        "num_frames": options.num_frames, "frame_stride": options.frame_stride, "fit": options.fit,
        "fs": "fps // stride per clip" if options.fs is None else options.fs, "seed": options.seed,
        "engines": {e.name: e.fingerprint() for e in engines},
        "protocol": "first window of each clip; keys = its first and last frame; frame metrics over the "
        "in-betweens (mean per clip, then over clips); FVD/KVD over whole windows, I3D at 224x224",
        **options.header,
    }  # fmt: skip
