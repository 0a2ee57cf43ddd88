"""Writing clips (``toonctl.io.video``): every kind round-trips through imageio, and no failure leaves a file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from toonctl.errors import InputImageError, OutputError
from toonctl.io import video
from toonctl.io.video import (
    FRAMES_KIND,
    OUTPUT_KINDS,
    check_output,
    frame_durations_ms,
    output_kind,
    read_frames,
    to_uint8,
    write_frames,
)

FPS = 8
ALL_OUTPUTS = ["clip.mp4", "clip.webm", "clip.gif", "clip.webp", "clip.apng", "clip/"]
LOSSLESS_OUTPUTS = ["clip.gif", "clip.webp", "clip.apng", "clip/"]


def make_frames(count: int = 5, height: int = 64, width: int = 128) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a flat background that changes per frame, a grey ramp, a moving square.

    Under 256 colours per frame, so a GIF palette holds them exactly; consecutive frames all differ.
    """
    frames = np.empty((count, height, width, 3), np.uint8)
    ramp = np.linspace(0, 255, width).round().astype(np.uint8)
    for t in range(count):
        frames[t] = (30 * t, 120, 220 - 20 * t)
        frames[t, : height // 4] = ramp[None, :, None]
        frames[t, height // 2 : height // 2 + 16, 8 * t : 8 * t + 16] = (250, 30, 20)
    return frames


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    "path, kind",
    [
        ("a.mp4", "mp4"),
        ("a.MP4", "mp4"),
        ("a.webm", "webm"),
        ("a.gif", "gif"),
        ("a.webp", "webp"),
        ("a.apng", "apng"),
        ("out/", FRAMES_KIND),
        ("out", FRAMES_KIND),
    ],
)
def test_output_kind(path, kind):
    assert output_kind(path) == kind


def test_existing_folder_is_a_frames_output(tmp_path):
    (tmp_path / "shots.v2").mkdir()
    assert output_kind(tmp_path / "shots.v2") == FRAMES_KIND


@pytest.mark.parametrize("suffix", [".avi", ".jpg", ".png"])
def test_unsupported_suffix_lists_the_supported_ones(suffix):
    with pytest.raises(OutputError) as info:
        output_kind(f"clip{suffix}")
    message = str(info.value)
    assert all(s in message for s in OUTPUT_KINDS) and "ending in /" in message
    if suffix == ".png":
        assert "use .apng" in message


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ALL_OUTPUTS)
def test_every_kind_round_trips(tmp_path, name):
    frames = make_frames()
    written = write_frames(frames, tmp_path / name, fps=FPS)
    assert written == tmp_path / name.rstrip("/")
    back, fps = read_frames(written)
    assert back.shape == frames.shape and back.dtype == np.uint8
    if name in LOSSLESS_OUTPUTS:
        assert np.array_equal(back, frames)
    else:
        assert np.abs(back.astype(int) - frames).mean() < 3
    assert fps is None if name == "clip/" else fps == pytest.approx(FPS, rel=0.02)
    assert leftovers(tmp_path) == [name.rstrip("/")]


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm"])
def test_video_files_read_back_with_imageio(tmp_path, name):
    frames = make_frames()
    path = write_frames(frames, tmp_path / name, fps=FPS)
    back = iio.imread(path, index=None)
    assert back.shape == frames.shape
    assert iio.immeta(path)["fps"] == pytest.approx(FPS)
    # flat areas keep their colour through yuv420p (edges of the red square blur in the chroma planes)
    assert np.abs(back[:, 40:44, 100:104].astype(int) - frames[:, 40:44, 100:104]).max() <= 4
    assert np.abs(back.astype(int) - frames).mean() < 3


def test_lower_crf_means_a_bigger_mp4(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    best = write_frames(frames, tmp_path / "best.mp4", fps=FPS, quality=0).stat().st_size
    worst = write_frames(frames, tmp_path / "worst.mp4", fps=FPS, quality=51).stat().st_size
    assert best > 2 * worst


def test_gif_reads_back_with_imageio_and_loops_forever(tmp_path):
    frames = make_frames()
    path = write_frames(frames, tmp_path / "clip.gif", fps=FPS)
    assert np.array_equal(iio.imread(path, index=None), frames)
    delays = [iio.immeta(path, index=i)["duration"] for i in range(len(frames))]
    assert delays == frame_durations_ms(len(frames), FPS, 10) == [120, 130, 130, 120, 120]
    assert iio.immeta(path)["loop"] == 0


@pytest.mark.parametrize("name", ["clip.webp", "clip.apng"])
def test_webp_and_apng_read_back_with_imageio(tmp_path, name):
    frames = make_frames()
    path = write_frames(frames, tmp_path / name, fps=FPS)
    extension = ".png" if name.endswith("apng") else None
    assert np.array_equal(np.stack(list(iio.imiter(path, extension=extension, mode="RGB"))), frames)
    with Image.open(path) as img:
        assert img.n_frames == len(frames) and img.info["loop"] == 0
        for i in range(img.n_frames):
            img.seek(i)
            img.load()
            assert img.info["duration"] == 125


def test_numbered_pngs(tmp_path):
    frames = make_frames(count=3)
    folder = write_frames(frames, tmp_path / "out/", fps=FPS)
    assert leftovers(folder) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert np.array_equal(iio.imread(folder / "frame_0002.png"), frames[2])


def test_frames_into_an_existing_folder_keep_other_files(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    write_frames(make_frames(count=4), folder, fps=FPS)
    write_frames(make_frames(count=2), folder, fps=FPS)  # the old frames 2 and 3 must go
    assert leftovers(folder) == ["frame_0000.png", "frame_0001.png", "notes.txt"]


def test_frame_durations_keep_the_running_time():
    assert frame_durations_ms(4, 8) == [125] * 4
    delays = frame_durations_ms(48, 24, 10)
    assert set(delays) == {40, 50} and sum(delays) == 2000
    assert all(abs(sum(delays[: i + 1]) - (i + 1) * 1000 / 24) <= 5 for i in range(48))


def test_odd_sizes_are_refused_for_yuv420p_only(tmp_path):
    frames = make_frames(height=63, width=128)
    with pytest.raises(OutputError, match="even height and width"):
        write_frames(frames, tmp_path / "clip.mp4", fps=FPS)
    assert write_frames(frames, tmp_path / "clip.gif", fps=FPS).exists()


@pytest.mark.parametrize("bad", [np.zeros((2, 64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8)])
def test_frames_must_be_t_h_w_3_uint8(tmp_path, bad):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        write_frames(bad, tmp_path / "clip.gif", fps=FPS)


# --------------------------------------------------------------------------------------------- to_uint8


def test_to_uint8_rounds_and_clamps():
    values = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 10.6 / 127.5 - 1])
    frames = values.view(1, 1, 1, 6).expand(2, 3, 1, 6)  # (T=2, 3, H=1, W=6)
    out = to_uint8(frames)
    assert out.shape == (2, 1, 6, 3) and out.dtype == np.uint8
    # 0 -> 127.5 rounds to 128; 10.6 rounds to 11 where the official truncation gives 10
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 11]


def test_to_uint8_takes_the_package_layout_too():
    frames = torch.rand(4, 3, 8, 16) * 2 - 1  # (T, 3, H, W)
    as_video = frames.transpose(0, 1).unsqueeze(0)  # (1, 3, T, H, W)
    assert np.array_equal(to_uint8(as_video), to_uint8(frames))
    assert to_uint8(frames).shape == (4, 8, 16, 3)


@pytest.mark.parametrize("shape", [(3, 8, 16), (4, 4, 8, 16), (2, 3, 4, 8, 16)])
def test_to_uint8_refuses_other_layouts(shape):
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(shape))


# --------------------------------------------------------------------------------------------- atomicity


def failing_midway(error: BaseException, seen: list[list[str]], folder: Path, *, wait_for_partial: bool = False):
    """A stand-in for ``video._each_frame`` that yields two frames, notes what is on disk, then fails.

    With ``wait_for_partial`` it first waits (up to 10 s) for the writer's partial output to appear: ffmpeg
    creates its output file only once it has read the first frame.
    """

    def each_frame(frames):
        yield from (np.ascontiguousarray(f) for f in frames[:2])
        deadline = time.monotonic() + 10
        while wait_for_partial and not leftovers(folder) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(leftovers(folder))
        raise error

    return each_frame


@pytest.mark.parametrize("error", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
@pytest.mark.parametrize("name", ALL_OUTPUTS)
def test_a_failure_midway_leaves_nothing(tmp_path, monkeypatch, name, error):
    seen: list[list[str]] = []
    streamed = name in ("clip.mp4", "clip.webm", "clip/")  # the partial output exists while frames arrive
    monkeypatch.setattr(video, "_each_frame", failing_midway(error, seen, tmp_path, wait_for_partial=streamed))
    with pytest.raises(type(error)):
        write_frames(make_frames(), tmp_path / name, fps=FPS)
    if streamed:
        assert len(seen[0]) == 1 and ".partial-" in seen[0][0]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ALL_OUTPUTS)
def test_a_failure_at_the_final_rename_leaves_nothing(tmp_path, monkeypatch, name):
    def refuse(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(video.os, "replace", refuse)
    with pytest.raises(KeyboardInterrupt):
        write_frames(make_frames(), tmp_path / name, fps=FPS)
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_output(tmp_path, monkeypatch):
    path = tmp_path / "clip.gif"
    path.write_bytes(b"previous")
    monkeypatch.setattr(video, "_each_frame", failing_midway(RuntimeError("boom"), [], tmp_path))
    with pytest.raises(RuntimeError):
        write_frames(make_frames(), path, fps=FPS)
    assert path.read_bytes() == b"previous" and leftovers(tmp_path) == ["clip.gif"]


def test_an_ffmpeg_error_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    monkeypatch.setitem(video._FFMPEG_ARGS, "mp4", ["-c:v", "no-such-codec", "-f", "mp4"])
    with pytest.raises(OutputError, match="ffmpeg failed"):
        write_frames(make_frames(), tmp_path / "clip.mp4", fps=FPS)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- destinations


def test_missing_parent_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist.*create it first"):
        write_frames(make_frames(), tmp_path / "nope" / "clip.mp4", fps=FPS)


@pytest.mark.parametrize("name", ["clip.mp4", "clip/"])
def test_parent_is_a_regular_file(tmp_path, name):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_frames(make_frames(), blocker / name, fps=FPS)


def test_parent_not_writable(tmp_path, monkeypatch):
    """A probe file is created and removed (``os.access`` says yes to root everywhere); the error names the
    user's path, never the probe."""
    import errno

    from toonctl.io import atomic

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(atomic.os, "open", refuse)
    with pytest.raises(OutputError, match="permission denied") as info:
        check_output(tmp_path / "clip.mp4")
    assert str(tmp_path / "clip.mp4") in str(info.value) and "probe" not in str(info.value)
    monkeypatch.undo()
    assert not list(tmp_path.iterdir())  # no probe left behind
    with pytest.raises(OutputError, match="does not take new files") as info:
        check_output("/proc/clip.mp4")  # root can "access" /proc, but nothing can be created there
    assert "partial" not in str(info.value) and "/proc/clip.mp4" in str(info.value)


def test_no_overwrite_unless_asked(tmp_path):
    path = tmp_path / "clip.webp"
    path.write_bytes(b"previous")
    with pytest.raises(OutputError) as info:
        write_frames(make_frames(), path, fps=FPS, overwrite=False)
    assert "--overwrite" in info.value.hint and path.read_bytes() == b"previous"
    write_frames(make_frames(), path, fps=FPS)  # the default replaces it
    assert read_frames(path)[0].shape[0] == 5


def test_no_overwrite_of_numbered_frames(tmp_path):
    folder = write_frames(make_frames(count=2), tmp_path / "out/", fps=FPS)
    with pytest.raises(OutputError, match="already holds numbered frames"):
        write_frames(make_frames(count=2), folder, fps=FPS, overwrite=False)


def test_a_folder_in_the_way_of_a_file(tmp_path):
    (tmp_path / "clip.mp4").mkdir()
    assert output_kind(tmp_path / "clip.mp4") == FRAMES_KIND  # an existing folder is a frames output
    (tmp_path / "frames").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output(tmp_path / "frames")


# --------------------------------------------------------------------------------------------- reading


def test_read_frames_of_a_folder_and_of_a_still(tmp_path):
    frames = make_frames(count=3)
    for i, name in enumerate(["f10.png", "f2.png", "f1.png"]):
        Image.fromarray(frames[[2, 1, 0][i]]).save(tmp_path / name)
    back, fps = read_frames(tmp_path)
    assert np.array_equal(back, frames) and fps is None
    still, fps = read_frames(tmp_path / "f1.png")
    assert still.shape == (1, 64, 128, 3) and fps is None


def test_read_frames_errors(tmp_path):
    with pytest.raises(InputImageError, match="no such file"):
        read_frames(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(InputImageError, match="bad.mp4"):
        read_frames(tmp_path / "bad.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputImageError, match="no image files"):
        read_frames(tmp_path / "empty")


def test_writing_leaves_the_cwd_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(make_frames(), "clip.gif", fps=FPS)
    assert os.listdir(tmp_path) == ["clip.gif"]
