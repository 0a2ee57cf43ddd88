"""What an episode file holds (frame rate, size), or one reason it cannot be used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toonctl.errors import DataError


class EpisodeError(DataError):
    """An episode that cannot be used (empty, no video stream, undecodable); the build skips it."""


@dataclass(frozen=True)
class VideoInfo:
    """Frame rate and size of a video's first video stream (its frames are counted by the shot detector)."""

    fps: float
    width: int
    height: int


def probe(path: Path) -> VideoInfo:
    """Frame rate and size of a video, read from its header (nothing is decoded).

    Raises:
        EpisodeError: a missing or empty file, a file without a video stream (audio only), one ffmpeg
            cannot open, or a video without size or frame rate.
    """
    import imageio_ffmpeg

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise EpisodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise EpisodeError(f"{path}: empty file (0 bytes)")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray")
        try:
            meta = next(reader)
        finally:
            reader.close()
    except (OSError, RuntimeError, StopIteration, KeyError) as exc:
        raise EpisodeError(f"{path}: {_reason(str(exc))}") from None
    fps = float(meta.get("fps") or 0)
    width, height = meta.get("size") or (0, 0)
    if not fps > 0 or not width:
        raise EpisodeError(f"{path}: no video frames (size {width}x{height}, fps {fps:g})")
    return VideoInfo(fps, int(width), int(height))


def _reason(ffmpeg_message: str) -> str:
    if "Audio:" in ffmpeg_message and "Video:" not in ffmpeg_message:
        return "no video stream (an audio-only file)"
    if "Invalid data found" in ffmpeg_message or "moov atom not found" in ffmpeg_message:
        return "not a video ffmpeg can decode (invalid data)"
    return "not a video ffmpeg can decode"
