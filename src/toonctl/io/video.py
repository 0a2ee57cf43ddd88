"""Frames out (and back in): write a clip as mp4, webm, gif, webp, apng or numbered PNGs, atomically.

Replaces ToonCrafter's ``save_results`` (``scripts/evaluation/inference.py``), which writes an mp4 with
``torchvision.io.write_video``. The output kind comes from the path (``output_kind``). Every writer works
on a temporary name next to the output and renames it into place when it is complete, so an error or
Ctrl-C never leaves a half-written file behind.

The encoders: ffmpeg from imageio-ffmpeg for mp4 (H.264) and webm (VP9), both yuv420p at a constant
quality (CRF); Pillow for gif, webp (lossless) and apng. imageio-ffmpeg is imported inside the functions,
and torch is never imported (tensors are used through their methods), so the CLI can import this cheaply.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageSequence

from toonctl.errors import DiskFullError, InputImageError, OutputError
from toonctl.io.atomic import PARTIAL_MARKER, check_writable, is_disk_full, output_error, partial_path
from toonctl.io.frames import list_frame_files, read_image

if TYPE_CHECKING:
    import torch

OUTPUT_KINDS = {".mp4": "mp4", ".webm": "webm", ".gif": "gif", ".webp": "webp", ".apng": "apng"}
FRAMES_KIND = "frames"  # a folder of numbered PNGs: a path ending in "/", an existing folder, or no suffix
FRAME_NAME = "frame_{index:0{width}d}.png"  # frame_0000.png, ... (more digits past 10000 frames)
DEFAULT_CRF = 17  # x264 calls ~17-18 visually lossless; also used for VP9, where it is a little better still
MAX_CRF = 51
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")  # read through ffmpeg

_NUMBERED_FRAME = re.compile(r"frame_\d+\.png")
_FFMPEG_ARGS = {
    # -tune animation: x264's settings for flat colours and sharp lines, i.e. cartoons.
    # +faststart: the index goes first, so browsers start playing before the download ends.
    "mp4": ["-c:v", "libx264", "-preset", "medium", "-tune", "animation", "-movflags", "+faststart", "-f", "mp4"],
    # -b:v 0 makes -crf a constant-quality target (with a bitrate, VP9 treats it as a cap).
    "webm": ["-c:v", "libvpx-vp9", "-b:v", "0", "-row-mt", "1", "-f", "webm"],
}
_PIL_OPTIONS = {
    # loop=0 loops forever; lossless webp keeps the drawings' flat colours exact and stays small.
    "gif": {"format": "GIF", "loop": 0},
    "webp": {"format": "WEBP", "loop": 0, "lossless": True},
    "apng": {"format": "PNG", "loop": 0, "default_image": False},
}
_DURATION_TICK_MS = {"gif": 10, "webp": 1, "apng": 1}  # GIF stores delays in centiseconds


# --------------------------------------------------------------------------------------------- paths


class FolderPath(type(Path())):
    """A path written with a trailing ``/`` (``pathlib`` drops it): the output is a folder of numbered PNGs."""


def parse_output_path(text: str) -> Path:
    """An ``-o`` value as the user typed it (the CLI's rule, stricter than ``output_kind``'s).

    Ending in ``/``: a ``FolderPath`` (numbered PNGs). An existing folder: that folder. Otherwise the name
    needs a suffix: ``-o result`` is refused rather than silently becoming a folder, and ``-o -`` too
    (there is no writing to standard output).

    Raises:
        OutputError: ``-``, an empty path, or a new name without a suffix.
    """
    if text in ("-", ""):
        raise OutputError(
            f"cannot write to {text or 'an empty path'!r}: toonctl writes files, not standard output",
            hint="give a file name (out.mp4, out.gif, ...) or a folder ending in / for numbered PNGs",
        )
    if text.endswith(("/", os.sep)):
        return FolderPath(text)
    path = Path(text)
    if not path.suffix and not path.is_dir():
        raise OutputError(
            f"cannot write {path}: no file type (a suffix: {', '.join(OUTPUT_KINDS)}, ...)",
            hint=f"add a suffix ({path.name}.mp4), or end the path with / for a folder of numbered PNGs ({path}/)",
        )
    return path


def output_kind(path: str | Path) -> str:
    """The kind of output ``path`` asks for: a value of ``OUTPUT_KINDS``, or ``FRAMES_KIND`` for a folder.

    A folder is a path ending in ``/`` (a ``FolderPath``, or a string), an existing folder, or (for
    library callers, whose ``Path`` objects cannot end in ``/``) a name without a suffix. The CLI
    refuses that last case (``parse_output_path``). ``-`` (standard output) is refused.

    Raises:
        OutputError: an unsupported suffix (the message lists the supported ones), or ``-``.
    """
    text = str(path)
    if text == "-":
        parse_output_path(text)  # raises: not standard output
    path = Path(path)
    if isinstance(path, FolderPath) or text.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return FRAMES_KIND
    suffix = path.suffix.lower()
    if suffix in OUTPUT_KINDS:
        return OUTPUT_KINDS[suffix]
    supported = ", ".join(OUTPUT_KINDS)
    hint = "a .png holds one picture: use .apng for an animated PNG, or " if suffix == ".png" else "or "
    raise OutputError(
        f"cannot write {path}: unsupported output type {suffix!r} (supported: {supported},"
        f" {hint}a folder path ending in / for numbered PNGs)"
    )


def check_output(path: str | Path, *, overwrite: bool = True) -> str:
    """Check, before any work, that ``path`` can be written; return its kind (see ``output_kind``).

    Raises:
        OutputError: unsupported suffix, the parent folder is missing, not a folder or not writable, a
            folder is in the way of a file (or the reverse), or the output exists and ``overwrite`` is False.
    """
    kind = output_kind(path)
    path = Path(path)
    check_writable(path)  # creates and removes a probe file: the folder exists and takes new files
    if kind == FRAMES_KIND:
        if path.exists() and not path.is_dir():
            raise OutputError(f"cannot write frames into {path}: it exists and is not a folder")
        if path.is_dir():
            check_writable(path, folder=path)
        if not overwrite and path.is_dir() and _numbered_frames(path):
            raise OutputError(f"{path} already holds numbered frames", hint="pass --overwrite to replace them")
    else:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: a folder of that name is in the way")
        if not overwrite and path.exists():
            raise OutputError(f"{path} already exists", hint="pass --overwrite to replace it")
    return kind


def _numbered_frames(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if _NUMBERED_FRAME.fullmatch(p.name)]


def output_complete(path: str | Path) -> bool:
    """Whether a finished output is at ``path``: a file, or a folder holding numbered frames.

    Outputs are renamed into place only when complete, so existing means finished; an empty folder
    (made by hand, or by ``mkdir``) is not a finished folder of frames.
    """
    path = Path(path)
    if path.is_dir():
        return bool(_numbered_frames(path))
    return path.is_file()


# --------------------------------------------------------------------------------------------- tensors


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Frames in [-1, 1] as ``(T, H, W, 3)`` uint8 RGB, ready for ``write_frames``.

    Args:
        video: ``(T, 3, H, W)`` (a stack of frames) or ``(1, 3, T, H, W)`` (one video in the package's
            ``(B, C, T, H, W)`` layout); any float dtype and device.

    Returns:
        ``(T, H, W, 3)`` uint8, ``round((clamp(x, -1, 1) + 1) / 2 * 255)``.
    """
    if video.ndim == 5:
        if video.shape[0] != 1 or video.shape[1] != 3:
            raise ValueError(f"expected one video of shape (1, 3, T, H, W), got {tuple(video.shape)}")
        frames = video[0].transpose(0, 1)  # (3, T, H, W) -> (T, 3, H, W)
    elif video.ndim == 4 and video.shape[1] == 3:
        frames = video
    else:
        raise ValueError(f"expected frames of shape (T, 3, H, W) or (1, 3, T, H, W), got {tuple(video.shape)}")
    # Round, not truncate (the official code truncates): truncation maps every value to the level below,
    # darkening the whole clip by half a level on average, and it cannot return 255 except for exactly 1.
    levels = frames.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()  # (T, 3, H, W)
    return levels.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (T, H, W, 3)


# --------------------------------------------------------------------------------------------- writing


def write_frames(
    frames: np.ndarray, path: str | Path, *, fps: float, quality: int | None = None, overwrite: bool = True
) -> Path:
    """Write ``frames`` to ``path``, whose suffix picks the kind (``output_kind``); atomic.

    The output is written under a temporary name in the same folder and renamed into place once
    complete; on any error, KeyboardInterrupt included, the temporary is removed and the error re-raised.
    Into an existing folder, the frames are written to a hidden sub-folder and moved in at the end
    (numbered frames left from a longer earlier run are deleted); those final moves are not one atomic step.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (see ``to_uint8``). mp4 and webm need even H and W.
        path: the output file, or folder for numbered PNGs.
        fps: frames per second. gif stores delays in 1/100 s and webp/apng in ms: the delays are
            rounded so their running sum stays within one tick of the exact time.
        quality: the CRF of mp4/webm, 0 (best) to 51; None is ``DEFAULT_CRF``. Other kinds are lossless
            (gif: a 256-colour palette per frame) and ignore it. gif, webp and apng store a run of
            identical consecutive frames as one longer frame (the encoders do it): it plays the same,
            but reads back as fewer frames.
        overwrite: replace an existing output (the CLI decides; here the default is True).

    Returns:
        the written path.

    Raises:
        OutputError: see ``check_output``; odd sizes for mp4/webm; the encoder failed.
    """
    kind = check_output(path, overwrite=overwrite)
    path = Path(path)
    _check_frames(frames, kind, path)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    crf = DEFAULT_CRF if quality is None else int(quality)
    if not 0 <= crf <= MAX_CRF:
        raise ValueError(f"quality (CRF) must be in [0, {MAX_CRF}], got {quality}")
    try:
        if kind == FRAMES_KIND:
            _write_frame_folder(frames, path)
        else:
            _write_file_atomically(frames, path, kind, fps=fps, crf=crf)
    except OSError as exc:
        raise output_error(path, exc) from exc
    return path


def _check_frames(frames: np.ndarray, kind: str, path: Path) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array, got {type(frames).__name__} {shape}")
    count, height, width, _ = frames.shape
    if count == 0 or height == 0 or width == 0:
        raise ValueError(f"no pixels to write: frames of shape {frames.shape}")
    if kind in _FFMPEG_ARGS and (height % 2 or width % 2):
        raise OutputError(
            f"cannot write {path}: {kind} (yuv420p) needs an even height and width, got {height}x{width} (HxW)"
        )


def _each_frame(frames: np.ndarray) -> Iterator[np.ndarray]:
    """The frames one at a time, C-contiguous; every writer consumes frames through here."""
    for frame in frames:
        yield np.ascontiguousarray(frame)


def _write_file_atomically(frames: np.ndarray, path: Path, kind: str, *, fps: float, crf: int) -> None:
    # The suffix stays at the end of the temporary name: some tools pick the format from it.
    partial = partial_path(path)
    try:
        if kind in _FFMPEG_ARGS:
            _encode_with_ffmpeg(frames, partial, kind, fps=fps, crf=crf, shown=path)
        else:
            _save_with_pillow(frames, partial, kind, fps=fps)
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise


def _encode_with_ffmpeg(frames: np.ndarray, target: Path, kind: str, *, fps: float, crf: int, shown: Path) -> None:
    """Pipe raw RGB frames into ffmpeg, writing ``target``; raise ``OutputError`` naming ``shown`` if it fails."""
    import imageio_ffmpeg

    try:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise OutputError(f"cannot write {shown}: ffmpeg not found ({exc})") from exc
    _, height, width, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)  # exact for 8, 24, 30000/1001, ...
    command = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(rate), "-i", "pipe:0",
        "-an", "-pix_fmt", "yuv420p", "-colorspace", "smpte170m", "-crf", str(crf), *_FFMPEG_ARGS[kind], str(target),
    ]  # fmt: skip
    # "-colorspace smpte170m" tags the BT.601 matrix that ffmpeg's RGB -> YUV conversion uses; untagged,
    # players guess BT.709 for HD sizes and shift the colours.
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full stderr pipe would block ffmpeg
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _feed(process, frames)
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            with contextlib.suppress(OSError):
                process.stdin.close()
            raise
        if returncode != 0:
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            detail = lines[-1] if lines else f"exit code {returncode}"
            if is_disk_full(OSError(detail)):
                raise DiskFullError(f"cannot write {shown}: no space left on the device")
            raise OutputError(f"cannot write {shown}: ffmpeg failed: {detail}")


def _feed(process: subprocess.Popen, frames: np.ndarray) -> None:
    """Write every frame to ffmpeg's stdin and close it. A broken pipe means ffmpeg quit: its exit code tells."""
    try:
        for frame in _each_frame(frames):
            process.stdin.write(frame.tobytes())
        process.stdin.close()
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            process.stdin.close()


def _save_with_pillow(frames: np.ndarray, target: Path, kind: str, *, fps: float) -> None:
    # A list, not a generator: Pillow's APNG writer walks append_images twice.
    images = [Image.fromarray(frame, mode="RGB") for frame in _each_frame(frames)]
    durations = frame_durations_ms(len(images), fps, _DURATION_TICK_MS[kind])
    images[0].save(target, save_all=True, append_images=images[1:], duration=durations, **_PIL_OPTIONS[kind])


def frame_durations_ms(count: int, fps: float, tick_ms: int = 1) -> list[int]:
    """Per-frame delays in ms, multiples of ``tick_ms``, whose running sum stays within a tick of i * 1000 / fps.

    At 24 fps with 10 ms ticks this alternates 40 and 50 ms instead of drifting with 40 ms everywhere.
    A delay never drops below one tick (so above 100 fps a GIF plays slower than asked).
    """
    ticks_per_frame = 1000 / (fps * tick_ms)
    delays, previous_end = [], 0
    for index in range(1, count + 1):
        end = round(index * ticks_per_frame)  # in ticks since the start
        delays.append(max(1, end - previous_end) * tick_ms)
        previous_end = end
    return delays


def _write_frame_folder(frames: np.ndarray, path: Path) -> None:
    """Numbered PNGs, written aside and renamed into place (see ``write_frames``)."""
    existing = path.is_dir()
    marker = f"{PARTIAL_MARKER}{os.getpid()}"
    staging = path / marker if existing else path.with_name(f".{path.name}{marker}")
    _remove(staging)  # left by a crashed run that had the same process id
    try:
        staging.mkdir()
        width = max(4, len(str(len(frames) - 1)))
        names = []
        for index, frame in enumerate(_each_frame(frames)):
            names.append(FRAME_NAME.format(index=index, width=width))
            Image.fromarray(frame, mode="RGB").save(staging / names[-1], format="PNG")
        if existing:
            _move_frames_into(staging, path, names)
        else:
            os.replace(staging, path)
    except BaseException:
        _remove(staging)
        raise


def _move_frames_into(staging: Path, folder: Path, names: list[str]) -> None:
    for name in names:
        os.replace(staging / name, folder / name)
    for stale in set(p.name for p in _numbered_frames(folder)) - set(names):  # from a longer earlier run
        (folder / stale).unlink()
    staging.rmdir()


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists (cleanup: never raises)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- reading


def read_frames(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a clip back: a video file, an animated gif/webp/apng (or any image), or a folder of frames.

    Args:
        path: a file (videos by suffix, ``VIDEO_SUFFIXES``, through ffmpeg; images through Pillow) or a
            folder (its images in natural order, see ``list_frame_files``).

    Returns:
        ``(frames, fps)``: ``(T, H, W, 3)`` uint8 RGB, and the frame rate; ``None`` for a folder or a
        still image, which carry no timing. For gif/webp/apng it is 1000 / the mean frame delay.

    Raises:
        InputImageError: missing, unreadable, empty, or frames of different sizes in a folder.
    """
    path = Path(path)
    if path.is_dir():
        return _read_frame_folder(path), None
    if not path.is_file():
        raise InputImageError(f"cannot read {path}: no such file")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video(path)
    return _read_animation(path)


def _read_frame_folder(folder: Path) -> np.ndarray:
    files = list_frame_files(folder)
    if not files:
        raise InputImageError(f"cannot read frames from {folder}: no image files in it")
    frames = [np.asarray(read_image(f)) for f in files]
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        raise InputImageError(f"cannot read frames from {folder}: the images differ in size ({sizes})")
    return np.stack(frames)


def _read_video(path: Path) -> tuple[np.ndarray, float | None]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    except (OSError, RuntimeError, StopIteration) as exc:
        # One line: ffmpeg's ~25-line banner stays in the chained exception (TOONCTL_DEBUG=1 shows it).
        raise InputImageError(f"cannot read {path}: not a video ffmpeg can decode ({ffmpeg_summary(exc)})") from exc
    finally:
        reader.close()  # stops ffmpeg and closes its pipes
    if not frames:
        raise InputImageError(f"cannot read {path}: the video has no frames")
    return np.stack(frames), float(meta["fps"]) if meta.get("fps") else None


_FFMPEG_PROBLEMS = ("partial file", "moov atom not found", "Invalid data", "Error", "error", "not found", "Invalid")


def ffmpeg_summary(exc: BaseException) -> str:
    """The telling line of an ffmpeg failure (e.g. "partial file", "moov atom not found"), without the banner."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for needle in _FFMPEG_PROBLEMS:
        hits = [line for line in lines[1:] if needle in line]
        if hits:
            return re.sub(r"^\[[^\]]*\]\s*", "", hits[0])[:200]  # drop the "[in#0/mov,... @ 0x..]" prefix
    return lines[0][:200] if lines else type(exc).__name__


def _read_animation(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        with Image.open(path) as img:
            frames, delays = [], []
            for frame in ImageSequence.Iterator(img):
                frame.load()  # webp sets the delay only once the frame is decoded
                frames.append(np.asarray(frame.convert("RGB")))
                delays.append(float(frame.info.get("duration") or 0))
    except Exception as exc:  # decoders of untrusted files raise OSError, SyntaxError, ValueError, ...
        raise InputImageError(f"cannot read {path}: not an image Pillow can decode ({exc})") from exc
    fps = 1000 * len(delays) / sum(delays) if len(frames) > 1 and all(delays) else None
    return np.stack(frames), fps
