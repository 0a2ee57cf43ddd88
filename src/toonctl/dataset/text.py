"""The text filter (the paper ran the CRAFT OCR detector and dropped clips "containing large amounts of
text"; it gives no threshold). Off unless the user asks for it.

A clip's text score is the largest, over its first, middle and last frame, of the fraction of the frame
covered by text. Two detectors:

* ``"heuristic"`` (measurable, no model): the classic morphological text finder. On the grey frame at the
  analysis width: the morphological gradient (3x3), Otsu's threshold, a horizontal closing that joins the
  letters of a line, then the connected boxes that look like lines of text: between 1.5% and 15% of the
  frame height tall, at least 2.5 times as wide as tall, and at least 45% of the box made of edge pixels.
  The score is their total area. Line art also makes such boxes: measure it on your footage first.
* a command (e.g. a wrapper around CRAFT or any OCR): run as ``COMMAND IMAGE.png`` per frame; it must
  print one number, the fraction (0-1) of the image covered by text.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from toonctl.dataset import deps
from toonctl.errors import DataError

HEURISTIC = "heuristic"


def check_detector(detector: str) -> None:
    """Raise ``DataError`` now for a detector command whose program cannot be found (before any work)."""
    if detector == HEURISTIC:
        return
    try:
        program = shlex.split(detector)[0]
    except (ValueError, IndexError):
        raise DataError(f"--text-detector {detector!r} is not a command line") from None
    if shutil.which(program) is None:
        raise DataError(
            f"text detector {program!r} not found",
            hint=f"give '{HEURISTIC}', or a command that prints the text fraction of the image path it is given",
        )


def text_score(frames: np.ndarray, detector: str) -> float:
    """``(N, H, W, 3)`` uint8 RGB frames -> the largest text fraction among them, per ``detector``."""
    if detector == HEURISTIC:
        return max(heuristic_text_fraction(frame) for frame in frames)
    return max(command_text_fraction(frame, detector) for frame in frames)


def heuristic_text_fraction(rgb: np.ndarray, analysis_width: int = 256) -> float:
    """Fraction of an ``(H, W, 3)`` uint8 frame covered by text-like boxes (see the module docstring)."""
    cv2 = deps.cv2()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if gray.shape[1] > analysis_width:
        height = max(1, round(gray.shape[0] * analysis_width / gray.shape[1]))
        gray = cv2.resize(gray, (analysis_width, height), interpolation=cv2.INTER_AREA)
    h, w = gray.shape
    gradient = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    _, edges = cv2.threshold(gradient, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    if not edges.any() or gradient.max() < 32:  # flat frame: Otsu would split noise
        return 0.0
    joined = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((1, max(3, w // 40)), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    area = 0
    for x, y, bw, bh, _ in stats[1:count]:
        if not 0.015 * h <= bh <= 0.15 * h or bw < 2.5 * bh:
            continue
        if (edges[y : y + bh, x : x + bw] > 0).mean() >= 0.45:
            area += bw * bh
    return float(min(1.0, area / (h * w)))


def command_text_fraction(rgb: np.ndarray, command: str) -> float:
    """Run ``command IMAGE.png`` on the frame and read the fraction it prints.

    Raises:
        DataError: the command fails, times out or prints something other than a number in [0, 1].
    """
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="toonctl-text-") as folder:
        image = Path(folder) / "frame.png"
        Image.fromarray(rgb).save(image)
        try:
            done = subprocess.run(
                [*shlex.split(command), str(image)], capture_output=True, text=True, timeout=300, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"text detector {command!r} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise DataError(f"text detector {command!r} failed: {detail}")
    try:
        value = float(done.stdout.strip().split()[-1])
    except (ValueError, IndexError):
        raise DataError(f"text detector {command!r} printed {done.stdout.strip()[:80]!r}, not a number") from None
    if not 0 <= value <= 1:
        raise DataError(f"text detector {command!r} printed {value}, not a fraction in [0, 1]")
    return value
