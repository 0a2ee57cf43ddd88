"""One episode, start to finish: probe, shots, one decoding pass, measures and filters per clip, clip
files, and the part record (``store``). This is what a worker of ``build`` runs.

Frames are decoded once, by ffmpeg, and streamed: only the clip in flight is held, as grey frames at
the analysis width (plus three sample frames); with ``copy`` its frames go straight to an ffmpeg encoder
under a temporary folder that is renamed into place when the episode is done. Odd frame sizes lose their
last row or column in the clip files (H.264 yuv420p needs even sizes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toonctl.dataset import deps, store
from toonctl.dataset.captions import Captions
from toonctl.dataset.holds import changed_fractions, drawing_stats
from toonctl.dataset.motion import mean_flow
from toonctl.dataset.probe import EpisodeError, VideoInfo, probe
from toonctl.dataset.settings import ANALYSIS_WIDTH, BuildSettings
from toonctl.dataset.shots import ClipPlan, detect_shots, plan_clips
from toonctl.dataset.sources import Episode
from toonctl.dataset.text import text_score
from toonctl.errors import OutputError

SAMPLE_WIDTH = 256


def process_episode(episode: Episode, root: Path, settings: BuildSettings, captions: Captions) -> dict:
    """Cut ``episode`` into clips under ``root``; write and return its part (see ``store``).

    Raises:
        EpisodeError: the episode cannot be used (the caller records it and goes on).
    """
    began = time.monotonic()
    info = probe(episode.path)
    shots = detect_shots(episode.path, info.fps, settings)
    plans = plan_clips(shots, info.fps, settings)
    final = store.clip_folder(root, episode.key)
    staging = final.with_name(f".{episode.key}.partial")
    store.remove_tree(staging)
    if settings.copy:
        staging.mkdir(parents=True)
    try:
        clips, samples = _cut(episode, info, plans, staging, settings, captions)
        store.remove_tree(final)
        if settings.copy:
            staging.rename(final)
    finally:
        store.remove_tree(staging)
    for clip in clips:
        if clip["status"] == "kept" and settings.copy:
            clip["path"] = (final / f"{clip['clip']}.mp4").relative_to(root).as_posix()
    store.write_samples(store.samples_path(root, episode.key), samples)
    part = {
        "episode": episode.key,
        "name": episode.name,
        "source": str(episode.path.resolve()),
        "frames": shots[-1][1],
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "shots": [list(s) for s in shots],
        "clips": clips,
        "seconds": round(time.monotonic() - began, 3),
    }
    store.failed_path(root, episode.key).unlink(missing_ok=True)
    store.write_json(store.part_path(root, episode.key), part)
    return part


@dataclass
class _ClipInFlight:
    """The clip being decoded: its grey analysis frames ``(h, w)``, its three sample frames ``(H, W, 3)`` and,
    with ``copy``, the encoder writing its file."""

    plan: ClipPlan
    sample_at: tuple[int, ...]
    gray: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    writer: object | None = None
    path: Path | None = None


def _cut(
    episode: Episode,
    info: VideoInfo,
    plans: list[ClipPlan],
    staging: Path,
    settings: BuildSettings,
    captions: Captions,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    import imageio_ffmpeg

    cv2 = deps.cv2()
    todo = [p for p in plans if not p.short]
    results = {p.name: _short_entry(p, episode, captions) for p in plans if p.short}
    samples: dict[str, np.ndarray] = {}
    current: _ClipInFlight | None = None
    position = 0  # index in todo
    try:
        reader = imageio_ffmpeg.read_frames(str(episode.path), pix_fmt="rgb24")
        width, height = next(reader)["size"]
    except (OSError, RuntimeError, StopIteration) as exc:
        raise EpisodeError(f"{episode.path}: cannot decode ({exc})") from None
    try:
        for index, data in enumerate(reader):
            while position < len(todo) and todo[position].end <= index:  # clips that ended
                if current is not None:
                    results[current.plan.name], samples[current.plan.name] = _finish(
                        current, episode, info, settings, captions
                    )
                    current = None
                position += 1
            if position >= len(todo):
                break
            plan = todo[position]
            if index < plan.start:
                continue
            if current is None:
                current = _start(plan, staging, info, settings)
            frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            _add(current, frame, index - plan.start, cv2)
    except (OSError, RuntimeError) as exc:
        _abandon(current)
        raise EpisodeError(f"{episode.path}: decoding failed ({exc})") from None
    except BaseException:
        _abandon(current)
        raise
    finally:
        reader.close()
    if current is not None:  # the last clip (or a file shorter than its count)
        results[current.plan.name], samples[current.plan.name] = _finish(current, episode, info, settings, captions)
    for plan in todo[position + (current is not None) :]:  # past the last decoded frame: a truncated file
        results.setdefault(plan.name, _short_entry(plan, episode, captions, frames=0))
    return [results[p.name] for p in plans], samples


def _start(plan: ClipPlan, staging: Path, info: VideoInfo, settings: BuildSettings) -> _ClipInFlight:
    middle = (plan.frames - 1) // 2
    clip = _ClipInFlight(plan, sample_at=(0, middle, plan.frames - 1))
    if settings.copy:
        import imageio_ffmpeg

        clip.path = staging / f"{plan.name}.mp4"
        size = (info.width - info.width % 2, info.height - info.height % 2)
        clip.writer = imageio_ffmpeg.write_frames(
            str(clip.path), size, fps=info.fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(settings.crf), "-tune", "animation", "-colorspace", "smpte170m",
                           "-movflags", "+faststart", "-an"],
        )  # fmt: skip
        clip.writer.send(None)
    return clip


def _add(clip: _ClipInFlight, frame: np.ndarray, offset: int, cv2) -> None:
    if clip.writer is not None:
        even = frame[: frame.shape[0] - frame.shape[0] % 2, : frame.shape[1] - frame.shape[1] % 2]
        clip.writer.send(np.ascontiguousarray(even))
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    clip.gray.append(_shrink(gray, ANALYSIS_WIDTH, cv2))
    if offset in clip.sample_at:
        clip.samples.extend([frame.copy()] * clip.sample_at.count(offset))


def _shrink(image: np.ndarray, width: int, cv2) -> np.ndarray:
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _close_writer(clip: _ClipInFlight) -> None:
    if clip.writer is not None:
        try:
            clip.writer.close()
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"cannot write {clip.path}: {exc}") from None
        clip.writer = None


def _abandon(clip: _ClipInFlight | None) -> None:
    """Stop the encoder of a clip that will not be finished (its file goes with the staging folder)."""
    if clip is not None and clip.writer is not None:
        try:
            clip.writer.close()
        except Exception:  # cleanup on the way out of another error
            pass
        clip.writer = None


def _finish(
    clip: _ClipInFlight, episode: Episode, info: VideoInfo, settings: BuildSettings, captions: Captions
) -> tuple[dict, np.ndarray]:
    """Measures and filters of a decoded clip; its file is kept or deleted accordingly."""
    cv2 = deps.cv2()
    _close_writer(clip)
    plan = clip.plan
    got = len(clip.gray)
    end = plan.start + got  # fewer frames than counted: a truncated file
    gray = np.stack(clip.gray)  # (T, h, w)
    changed = changed_fractions(gray)
    drawings = drawing_stats(changed, settings.hold_fraction)
    flow = mean_flow(gray, changed < settings.hold_fraction, settings.flow_pairs)
    while len(clip.samples) < 3:  # a truncated clip missed its middle or last sample
        clip.samples.append(clip.samples[-1])
    text = text_score(np.stack(clip.samples), settings.text_detector) if settings.text_detector else None
    if got < settings.min_clip_frames(info.fps):
        dropped_by = "short"
    elif settings.min_flow > 0 and flow < settings.min_flow:
        dropped_by = "static"
    elif text is not None and text > settings.max_text:
        dropped_by = "text"
    else:
        dropped_by = None
    if dropped_by and clip.path is not None:
        clip.path.unlink(missing_ok=True)
    caption, caption_source = captions.caption(episode, plan.start, end)
    entry = {
        "clip": plan.name,
        "shot": plan.shot,
        "piece": plan.piece,
        "start": plan.start,
        "end": end,
        "frames": got,
        "status": "dropped" if dropped_by else "kept",
        "dropped_by": dropped_by,
        "path": None,
        "distinct": drawings.distinct,
        "drawing_rate": drawings.rate,
        "duplicate_rate": round(drawings.duplicate_rate, 4),
        "flow": round(flow, 4),
        "text": None if text is None else round(text, 4),
        "caption": caption,
        "caption_source": caption_source,
        "scores": {},
    }
    sample = np.stack([_shrink(frame, SAMPLE_WIDTH, cv2) for frame in clip.samples[:3]])
    return entry, sample


def _short_entry(plan: ClipPlan, episode: Episode, captions: Captions, frames: int | None = None) -> dict:
    """The record of a clip dropped as too short, unanalysed (``frames``: how many it really has)."""
    caption, caption_source = captions.caption(episode, plan.start, plan.end)
    return {
        "clip": plan.name,
        "shot": plan.shot,
        "piece": plan.piece,
        "start": plan.start,
        "end": plan.end,
        "frames": plan.frames if frames is None else frames,
        "status": "dropped",
        "dropped_by": "short",
        "path": None,
        "caption": caption,
        "caption_source": caption_source,
    }
