"""Pictures to look at beside the numbers: a contact sheet and a side-by-side video per clip.

* Contact sheet (PNG): one row per source (``real`` first, then each engine), one column per window frame,
  each frame scaled to at most ``THUMB_HEIGHT`` pixels high, the row's name in a margin on the left and the
  frame number above each column.
* Side-by-side video (mp4): the real window and every engine's next to each other, full size, names in a strip
  on top, at the window's frame rate (the clip's rate over the stride; 8 fps when unknown).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from toonctl.io.atomic import write_bytes_atomic

THUMB_HEIGHT = 128
LABEL_WIDTH = 120
HEADER_HEIGHT = 16
GAP = 2
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def contact_sheet(rows: Sequence[tuple[str, np.ndarray]]) -> Image.Image:
    """``[(name, (T, H, W, 3) uint8), ...]`` (one T and frame size for all) -> the sheet."""
    count, height, width = rows[0][1].shape[:3]
    scale = min(1.0, THUMB_HEIGHT / height)
    th, tw = max(1, round(height * scale)), max(1, round(width * scale))
    sheet = Image.new("RGB", (LABEL_WIDTH + count * (tw + GAP), HEADER_HEIGHT + len(rows) * (th + GAP)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k in range(count):
        draw.text((LABEL_WIDTH + k * (tw + GAP) + 2, 2), str(k), fill=INK)
    for r, (name, frames) in enumerate(rows):
        top = HEADER_HEIGHT + r * (th + GAP)
        draw.text((4, top + th // 2 - 5), name[:18], fill=INK)
        for k, frame in enumerate(frames):
            thumb = Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR)
            sheet.paste(thumb, (LABEL_WIDTH + k * (tw + GAP), top))
    return sheet


def side_by_side(rows: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """``[(name, (T, H, W, 3) uint8), ...]`` -> ``(T, HEADER + H', sum W', 3)`` uint8, sides made even."""
    count, height, width = rows[0][1].shape[:3]
    total_w = len(rows) * width
    out_h, out_w = HEADER_HEIGHT + height + height % 2, total_w + total_w % 2
    header = Image.new("RGB", (out_w, HEADER_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(header)
    for i, (name, _) in enumerate(rows):
        draw.text((i * width + 2, 2), name[: max(1, width // 7)], fill=INK)
    video = np.full((count, out_h, out_w, 3), 255, dtype=np.uint8)
    video[:, :HEADER_HEIGHT] = np.asarray(header)
    for i, (_, frames) in enumerate(rows):
        video[:, HEADER_HEIGHT : HEADER_HEIGHT + height, i * width : (i + 1) * width] = frames
    return video


def save_png_atomically(image: Image.Image, path: Path) -> None:
    """Save ``image`` as PNG under a temporary name beside ``path``, then rename it into place."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def write_clip_media(folder: Path, rows: Sequence[tuple[str, np.ndarray]], fps: float) -> dict[str, str]:
    """Write ``folder/sheet.png`` and ``folder/side_by_side.mp4``; return their paths."""
    from toonctl.io.video import write_frames

    folder.mkdir(parents=True, exist_ok=True)
    sheet = folder / "sheet.png"
    save_png_atomically(contact_sheet(rows), sheet)
    video = folder / "side_by_side.mp4"
    write_frames(side_by_side(rows), video, fps=fps)
    return {"sheet": str(sheet), "video": str(video)}
