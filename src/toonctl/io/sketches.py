"""Sketches in, line art out: the file side of sketch control.

In: ``--sketch INDEX=PATH`` and ``--sketches DIR`` (files named by frame index) become per-frame hints,
``(1, H, W)`` float32 tensors of white lines on black in [0, 1] at the output size -- what the sketch
encoder takes (both community ports feed it that way: mattyamonaca inverts black-on-white drawings with
``bitwise_not`` and divides by 255; kijai expects white-on-black line art already).

Polarity: artists draw dark lines on light paper, line-art exports are often the reverse. ``auto`` looks
at the median grey level: line art is mostly background, so a light median means black lines on white
(inverted), a dark one white lines on black (kept). A flag sets it when the guess would be wrong (e.g. a
drawing that is mostly solid black fills). Transparent backgrounds count as white paper (``read_image``
composites them over white), so black strokes on a transparent layer work as drawn.

Out: line art from the extractor is written as one picture, numbered PNGs or a video.

torch is imported inside the functions that need it, so the CLI can import this module cheaply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from toonctl.errors import InputImageError, OutputError
from toonctl.io.atomic import atomic_path, check_writable
from toonctl.io.frames import fit_image, list_frame_files, read_image

if TYPE_CHECKING:
    import torch

BLACK_ON_WHITE = "black-on-white"
WHITE_ON_BLACK = "white-on-black"
POLARITIES = ("auto", BLACK_ON_WHITE, WHITE_ON_BLACK)
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # one picture out
_ANIMATED_SUFFIXES = (".gif", ".webp", ".apng", ".png")  # may hold several frames
_INDEX = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits


# --------------------------------------------------------------------------------------------- naming


def parse_sketch_arg(text: str) -> tuple[int, Path]:
    """``"5=rough/5.png"`` -> ``(5, Path("rough/5.png"))``.

    Raises:
        ValueError: not ``INDEX=PATH`` with a non-negative integer index.
    """
    index, sep, path = text.partition("=")
    if not sep or not path or not index.strip().isdigit():
        raise ValueError(f"expected INDEX=PATH with a frame index >= 0 (e.g. 5=sketches/5.png), got {text!r}")
    return int(index), Path(path)


def sketch_index(path: str | Path) -> int:
    """The frame index a sketch file's name gives: its last run of digits (``0007.png``, ``frame_12.png``).

    Raises:
        InputImageError: the name has no digits.
    """
    match = _INDEX.search(Path(path).stem)
    if match is None:
        raise InputImageError(
            f"cannot tell the frame index of sketch {path}: name sketch files by frame index (e.g. 0007.png)"
        )
    return int(match.group(1))


def list_sketches(directory: str | Path) -> dict[int, Path]:
    """``{frame index: file}`` for the images of ``directory``, named by frame index.

    Raises:
        InputImageError: a missing folder, no images in it, a name without an index, or two files with the
            same index (``7.png`` and ``007.png``).
    """
    files = list_frame_files(directory)
    if not files:
        raise InputImageError(f"no sketch images in {directory}")
    found: dict[int, Path] = {}
    for path in files:
        index = sketch_index(path)
        if index in found:
            raise InputImageError(f"two sketches for frame {index} in {directory}: {found[index].name}, {path.name}")
        found[index] = path
    return dict(sorted(found.items()))


def gather_sketches(args: Iterable[str], directory: str | Path | None = None) -> dict[int, Path]:
    """The sketches of ``--sketches DIR`` then ``--sketch INDEX=PATH`` (which replaces the folder's file for
    that index), sorted by index.

    Raises:
        ValueError: a malformed ``INDEX=PATH`` or the same index given twice with ``--sketch``.
        InputImageError: see ``list_sketches``.
    """
    found = list_sketches(directory) if directory is not None else {}
    given: set[int] = set()
    for text in args:
        index, path = parse_sketch_arg(text)
        if index in given:
            raise ValueError(f"frame {index} is given two sketches")
        given.add(index)
        found[index] = path
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------------------------- hints


def detect_polarity(gray: np.ndarray) -> str:
    """``BLACK_ON_WHITE`` when the median grey level is light (>= 128 of 255), else ``WHITE_ON_BLACK``.

    Line art is mostly background, so the median is the background's level; a tie counts as paper.
    """
    return BLACK_ON_WHITE if float(np.median(gray)) >= 127.5 else WHITE_ON_BLACK


def read_sketch(
    path: str | Path, size: tuple[int, int], fit: str = "crop", polarity: str = "auto"
) -> tuple[torch.Tensor, str]:
    """Read one sketch as a hint: white lines on black in [0, 1], fitted like the key frames.

    Args:
        path: an image file (read with ``read_image``: EXIF orientation, transparency over white, ...).
        size: (H, W) of the output frames.
        fit: the key frames' fit mode, so the lines stay on the drawings (borders added by ``pad`` are black:
            no lines).
        polarity: ``auto`` (detect), ``black-on-white`` (inverted) or ``white-on-black`` (kept).

    Returns:
        ``((1, H, W) float32 hint, the polarity used)``.
    """
    import torch

    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    gray = np.asarray(read_image(path).convert("L"))  # ITU-R 601 luma, as cv2's BGR2GRAY
    used = detect_polarity(gray) if polarity == "auto" else polarity
    lines = 255 - gray if used == BLACK_ON_WHITE else gray  # white lines on black
    fitted = fit_image(Image.fromarray(lines).convert("RGB"), size, fit, pad_color=(0, 0, 0))
    hint = torch.from_numpy(np.array(fitted)[:, :, 0]).float().div(255)  # (H, W)
    return hint[None], used


@dataclass
class Sketches:
    """Hints ready for ``SketchControl``: ``{frame index: (1, H, W) tensor}``, the polarity used for each
    file, and notes for the user."""

    hints: dict[int, torch.Tensor]
    polarities: dict[int, str]
    notes: list[str] = field(default_factory=list)


def load_sketches(
    paths: Mapping[int, str | Path], size: tuple[int, int], fit: str = "crop", polarity: str = "auto"
) -> Sketches:
    """Read every sketch of ``paths`` (``{frame index: file}``) with ``read_sketch``."""
    hints, used = {}, {}
    for index, path in paths.items():
        hints[index], used[index] = read_sketch(path, size, fit, polarity)
    notes = []
    if polarity == "auto" and used:
        inverted = sum(p == BLACK_ON_WHITE for p in used.values())
        notes.append(
            f"sketches: {inverted} black-on-white (inverted), {len(used) - inverted} white-on-black"
            + (" -- mixed; pass --polarity if a guess is wrong" if 0 < inverted < len(used) else "")
        )
    return Sketches(hints=hints, polarities=used, notes=notes)


# --------------------------------------------------------------------------------------------- media


def read_media(path: str | Path) -> tuple[np.ndarray, float | None, str]:
    """Read pictures to extract line art from: an image, an animated image, a video or a frames folder.

    Returns:
        ``(frames (T, H, W, 3) uint8, fps or None, kind)`` with kind ``image``, ``frames`` or ``video``.
    """
    from toonctl.io.video import VIDEO_SUFFIXES, read_frames

    path = Path(path)
    if path.is_dir():
        return read_frames(path)[0], None, "frames"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES or (suffix in _ANIMATED_SUFFIXES and _frame_count(path) > 1):
        frames, fps = read_frames(path)
        return frames, fps, "video"
    return np.asarray(read_image(path))[None], None, "image"


def _frame_count(path: Path) -> int:
    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:  # read_image reports unreadable files properly
        return 1


def check_line_art_output(path: str | Path, count: int) -> None:
    """Check before any work that ``count`` frames of line art can be written to ``path``.

    A still-image suffix (``STILL_SUFFIXES``) takes one picture; anything else goes to ``write_frames``
    (a video or animation by suffix, or a folder of numbered PNGs).
    """
    from toonctl.io.video import check_output

    path = Path(path)
    if path.suffix.lower() in STILL_SUFFIXES and not str(path).endswith(("/", os.sep)) and not path.is_dir():
        if count != 1:
            raise OutputError(
                f"cannot write {count} frames of line art to {path}: a {path.suffix} holds one picture",
                hint="give a folder (ending in /) for numbered PNGs, or a video file",
            )
        check_writable(path)  # the folder exists and takes a new file (a probe is made and removed)
        if path.is_dir():
            raise OutputError(f"cannot write {path}: a folder of that name is in the way")
        return
    check_output(path)


def write_line_art(frames: np.ndarray, path: str | Path, *, fps: float = 8.0, quality: int | None = None) -> Path:
    """Write ``(T, H, W)`` uint8 grey frames: one picture (still suffix) or ``write_frames``' kinds; atomic."""
    from toonctl.io.video import write_frames

    path = Path(path)
    check_line_art_output(path, frames.shape[0])
    if path.suffix.lower() in STILL_SUFFIXES and frames.shape[0] == 1 and not path.is_dir():
        return _write_still(frames[0], path)
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    return write_frames(np.ascontiguousarray(rgb), path, fps=fps, quality=quality)


def _write_still(gray: np.ndarray, path: Path) -> Path:
    """Save under a temporary name in the same folder, then rename: never a half-written file. The file
    gets the umask's permissions, like every other output."""
    with atomic_path(path) as temp:
        Image.fromarray(gray).save(temp, format=Image.registered_extensions().get(path.suffix.lower()))
    return path


def line_art_to_uint8(art: torch.Tensor) -> np.ndarray:
    """``(N, 1, H, W)`` line art in [-1, 1] -> ``(N, H, W)`` uint8 (rounded, clamped)."""
    levels = art.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return levels[:, 0].cpu().numpy()
