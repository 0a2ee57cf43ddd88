"""PNG figures drawn with Pillow (no matplotlib): a histogram with an optional threshold line, and a
contact sheet of sample frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAR = (70, 110, 180)
BAR_DROPPED = (200, 90, 70)
INK = (30, 30, 30)
GRID = (225, 225, 225)


def histogram(
    values: Sequence[float],
    path: Path,
    title: str,
    *,
    bins: int = 24,
    threshold: float | None = None,
    drop_below: bool = True,
    integer: bool = False,
    size: tuple[int, int] = (640, 360),
) -> Path:
    """A bar histogram of ``values`` written to ``path``; bars on the dropped side of ``threshold`` are red
    and the threshold is a dashed line. ``integer``: one bar per whole number (e.g. drawing rates)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 48, width - 16, 32, height - 40
    draw.text((left, 8), f"{title}  (n={len(values)})", fill=INK, font=font)
    if len(values) == 0:
        draw.text((left, height // 2), "no values", fill=INK, font=font)
        return _save(image, path)
    low, high = float(values.min()), float(values.max())
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    if integer:
        edges = np.arange(np.floor(low), np.floor(high) + 2) - 0.5
    else:
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    counts, edges = np.histogram(values, bins=edges)
    peak = max(1, counts.max())
    for fraction in (0.25, 0.5, 0.75, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((4, y - 6), f"{fraction * peak:.3g}", fill=INK, font=font)
    span = edges[-1] - edges[0]

    def x_of(value: float) -> float:
        return left + (value - edges[0]) / span * (right - left)

    for count, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        centre = (a + b) / 2
        dropped = threshold is not None and (centre < threshold if drop_below else centre > threshold)
        y = bottom - count / peak * (bottom - top)
        draw.rectangle([x_of(a) + 1, y, x_of(b) - 1, bottom], fill=BAR_DROPPED if dropped else BAR)
    draw.line([(left, bottom), (right, bottom)], fill=INK)
    for value in (edges[0], (edges[0] + edges[-1]) / 2, edges[-1]):
        label = f"{value:.3g}"
        draw.text((x_of(value) - 3 * len(label), bottom + 6), label, fill=INK, font=font)
    if threshold is not None:
        x = x_of(threshold)
        for y in range(top, bottom, 8):
            draw.line([(x, y), (x, y + 4)], fill=BAR_DROPPED, width=2)
        side = "below" if drop_below else "above"
        dropped = int((values < threshold).sum() if drop_below else (values > threshold).sum())
        draw.text((left, bottom + 22), f"threshold {threshold:g}: {dropped} {side} (dropped)", fill=INK, font=font)
    return _save(image, path)


def contact_sheet(rows: Sequence[tuple[str, np.ndarray]], path: Path, *, thumb_width: int = 160) -> Path:
    """One row per clip: its label, then its sample frames ``(N, H, W, 3)`` uint8 side by side."""
    font = ImageFont.load_default()
    label_height = 14
    thumbs = []
    for label, frames in rows:
        scaled = [_thumb(frame, thumb_width) for frame in frames]
        thumbs.append((label, scaled))
    if not thumbs:
        image = Image.new("RGB", (320, 40), "white")
        ImageDraw.Draw(image).text((8, 12), "no clips", fill=INK, font=font)
        return _save(image, path)
    row_height = max(t.height for _, row in thumbs for t in row) + label_height + 6
    columns = max(len(row) for _, row in thumbs)
    image = Image.new("RGB", (columns * (thumb_width + 4) + 4, row_height * len(thumbs) + 4), "white")
    draw = ImageDraw.Draw(image)
    for r, (label, row) in enumerate(thumbs):
        y = 4 + r * row_height
        draw.text((4, y), label, fill=INK, font=font)
        for c, thumb in enumerate(row):
            image.paste(thumb, (4 + c * (thumb_width + 4), y + label_height))
    return _save(image, path)


def _thumb(frame: np.ndarray, width: int) -> Image.Image:
    image = Image.fromarray(frame)
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _save(image: Image.Image, path: Path) -> Path:
    from toonctl.io.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        image.save(partial)
    return path
