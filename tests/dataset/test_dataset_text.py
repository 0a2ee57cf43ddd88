"""The optional text filter: the morphological heuristic and a user's detector command."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the dataset extra (opencv-python-headless) is not installed")
from PIL import Image, ImageDraw, ImageFont

from dataset.synthetic import episode_frames
from toonctl.dataset.text import check_detector, command_text_fraction, heuristic_text_fraction, text_score
from toonctl.errors import DataError


def _credits() -> np.ndarray:
    """A 256x144 title card: three lines of white text on dark blue."""
    image = Image.new("RGB", (256, 144), (20, 30, 90))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    for row, line in enumerate(("DIRECTED BY SOMEONE", "MUSIC BY SOMEBODY ELSE", "ANIMATION STUDIO 2026")):
        draw.text((24, 30 + 30 * row), line, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def test_heuristic_scores_a_title_card_far_above_a_cartoon_frame():
    card = heuristic_text_fraction(_credits())
    cartoon = max(heuristic_text_fraction(frame) for frame in episode_frames()[::8])
    assert card > 0.1
    assert cartoon < 0.02


def test_a_detector_command_is_run_per_frame_and_its_number_read(tmp_path):
    script = tmp_path / "detector.py"
    script.write_text(
        "import sys\nfrom PIL import Image\nprint(0.5 if Image.open(sys.argv[1]).width > 100 else 0.0)\n"
    )
    command = f"{sys.executable} {script}"
    assert command_text_fraction(_credits(), command) == 0.5
    assert text_score(np.stack([_credits()[:, :90]] * 3), command) == 0.0
    script.write_text("print('lots')\n")
    with pytest.raises(DataError, match="not a number"):
        command_text_fraction(_credits(), command)
    check_detector(command)
    with pytest.raises(DataError, match="not found"):
        check_detector("no-such-ocr-program --fast")


def test_the_text_filter_drops_rolling_credits_in_a_build(tmp_path):
    from toonctl.dataset.build import build_dataset
    from toonctl.dataset.settings import BuildSettings
    from toonctl.io.video import write_frames

    card = _credits()
    credits = np.stack([np.roll(card, -2 * t, axis=0) for t in range(24)])  # the credits roll up 2 px a frame
    cartoon = episode_frames(("moving",)).repeat(2, axis=1).repeat(2, axis=2)[:, :144, :]  # (24, 128, 192, 3)
    cartoon = np.pad(cartoon, ((0, 0), (8, 8), (32, 32), (0, 0)), mode="edge")  # (24, 144, 256, 3)
    write_frames(np.concatenate([cartoon, credits]), tmp_path / "ending.mp4", fps=12)
    result = build_dataset([tmp_path / "ending.mp4"], tmp_path / "d", BuildSettings(text_detector="heuristic"))
    assert result.summary["dropped"]["text"] == 1 and result.summary["kept"] == 1
    assert result.summary["filters"]["text"].startswith("on: heuristic")
    assert (tmp_path / "d" / "report" / "text.png").is_file()
