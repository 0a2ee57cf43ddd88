"""Reading sketches (names, polarity, conversion to hints) and writing line art."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sketch_fixtures import draw_sketch

from toonctl.errors import InputImageError, OutputError
from toonctl.io.sketches import (
    BLACK_ON_WHITE,
    WHITE_ON_BLACK,
    detect_polarity,
    gather_sketches,
    list_sketches,
    load_sketches,
    parse_sketch_arg,
    read_media,
    read_sketch,
    sketch_index,
    write_line_art,
)


def test_sketch_names_and_arguments(tmp_path):
    assert parse_sketch_arg("5=rough/5.png") == (5, Path("rough/5.png"))
    assert parse_sketch_arg("12=a=b.png") == (12, Path("a=b.png"))
    for bad in ("rough.png", "x=a.png", "-1=a.png", "3="):
        with pytest.raises(ValueError, match="INDEX=PATH"):
            parse_sketch_arg(bad)
    assert [sketch_index(n) for n in ("0007.png", "frame_12.png", "shot3_frame_0004.jpg", "9")] == [7, 12, 4, 9]
    with pytest.raises(InputImageError, match="frame index"):
        sketch_index("notes.png")

    folder = tmp_path / "sk"
    folder.mkdir()
    for name in ("frame_2.png", "frame_10.png", "frame_0.png"):
        draw_sketch(folder / name, 40)
    (folder / "README.txt").write_text("not an image")
    assert list(list_sketches(folder)) == [0, 2, 10]
    override = tmp_path / "other.png"
    found = gather_sketches([f"2={override}", f"4={override}"], folder)
    assert list(found) == [0, 2, 4, 10] and found[2] == override
    with pytest.raises(ValueError, match="two sketches"):
        gather_sketches(["1=a.png", "1=b.png"])
    draw_sketch(folder / "frame_002.png", 40)
    with pytest.raises(InputImageError, match="two sketches for frame 2"):
        list_sketches(folder)


@pytest.mark.parametrize("white_on_black", [False, True], ids=["black-on-white", "white-on-black"])
def test_polarity_is_detected_and_hints_are_white_lines_on_black(tmp_path, white_on_black):
    path = draw_sketch(tmp_path / "s.png", 60, white_on_black=white_on_black)
    hint, used = read_sketch(path, (64, 128))
    assert used == (WHITE_ON_BLACK if white_on_black else BLACK_ON_WHITE)
    assert hint.shape == (1, 64, 128) and hint.dtype.is_floating_point
    assert 0 <= hint.min() and hint.max() <= 1
    assert float(hint.median()) == 0.0  # the paper is black
    assert hint.max() > 0.9  # the lines are white
    # Ground line at 3/4 of the height is a line in either polarity.
    assert hint[0, 48, :].mean() > 0.5
    # Forcing the wrong polarity gives the negative.
    wrong = WHITE_ON_BLACK if used == BLACK_ON_WHITE else BLACK_ON_WHITE
    negative, forced = read_sketch(path, (64, 128), polarity=wrong)
    assert forced == wrong
    assert np.allclose(negative.numpy(), 1 - hint.numpy(), atol=1 / 255)


def test_detection_rule_and_override(tmp_path):
    assert detect_polarity(np.full((8, 8), 250, np.uint8)) == BLACK_ON_WHITE
    assert detect_polarity(np.full((8, 8), 5, np.uint8)) == WHITE_ON_BLACK
    mostly_ink = np.zeros((8, 8), np.uint8)
    mostly_ink[:2] = 255  # a drawing mostly filled black on white paper: detection is fooled
    assert detect_polarity(mostly_ink) == WHITE_ON_BLACK
    with pytest.raises(ValueError, match="polarity"):
        read_sketch(draw_sketch(tmp_path / "s.png", 10), (64, 128), polarity="inverted")


def test_padding_adds_no_lines_and_mixed_polarities_are_noted(tmp_path):
    a = draw_sketch(tmp_path / "a.png", 30, size=(128, 128))
    b = draw_sketch(tmp_path / "b.png", 30, size=(128, 128), white_on_black=True)
    loaded = load_sketches({0: a, 5: b}, (64, 128), fit="pad")
    assert loaded.polarities == {0: BLACK_ON_WHITE, 5: WHITE_ON_BLACK}
    for hint in loaded.hints.values():
        assert hint[0, :, :20].max() == 0 and hint[0, :, -20:].max() == 0  # pad borders: no lines
    assert "mixed" in loaded.notes[0]
    # The same drawing in either polarity gives the same hint.
    assert (loaded.hints[0] - loaded.hints[5]).abs().max() <= 1 / 255


def test_line_art_outputs_and_media_inputs(tmp_path):
    one = np.full((1, 64, 96), 255, np.uint8)
    one[0, 30] = 0
    written = write_line_art(one, tmp_path / "lines.png")
    assert np.array_equal(np.asarray(Image.open(written)), one[0])
    assert not list(tmp_path.glob(".*partial*"))
    with pytest.raises(OutputError, match="holds one picture"):
        write_line_art(np.repeat(one, 3, axis=0), tmp_path / "three.png")
    folder = write_line_art(np.repeat(one, 3, axis=0), tmp_path / "frames", fps=12)
    frames, fps, kind = read_media(folder)
    assert frames.shape == (3, 64, 96, 3) and kind == "frames" and fps is None
    video = write_line_art(np.repeat(one, 4, axis=0), tmp_path / "clip.mp4", fps=12)
    frames, fps, kind = read_media(video)
    assert frames.shape[0] == 4 and kind == "video" and fps == pytest.approx(12)
    frames, fps, kind = read_media(written)
    assert frames.shape == (1, 64, 96, 3) and kind == "image"
