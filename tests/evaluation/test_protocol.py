"""Windows, fs, seeds and the generation cache."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import draw_key
from toonctl.errors import DataError
from toonctl.evaluation import cache
from toonctl.evaluation.protocol import (
    DEFAULT_FS,
    clip_id,
    clip_seed,
    frame_rate_condition,
    plan_window,
    read_window,
)
from toonctl.io.clips import ClipRecord


@pytest.fixture
def folder_clip(tmp_path):
    folder = tmp_path / "shot"
    folder.mkdir()
    for i in range(7):
        draw_key(folder / f"{i:02d}.png", 4 + 6 * i, size=(48, 80))
    return ClipRecord(folder)


def test_window_takes_every_stride_th_frame_from_the_start(folder_clip):
    win = plan_window(folder_clip, num_frames=4, frame_stride=2, seed=1)
    assert win.indices == (0, 2, 4, 6)
    assert win.fps is None and win.fs == DEFAULT_FS
    frames = read_window(win, (32, 64))
    assert frames.shape == (4, 32, 64, 3) and frames.dtype == np.uint8


def test_too_short_a_clip_is_a_data_error(folder_clip):
    with pytest.raises(DataError, match="needs 10"):
        plan_window(folder_clip, num_frames=4, frame_stride=3, seed=1)


def test_fs_is_fps_floor_divided_by_the_stride():
    assert frame_rate_condition(24.0, 1) == 24
    assert frame_rate_condition(29.97, 4) == 7
    assert frame_rate_condition(24.0, 50) == 1
    assert frame_rate_condition(None, 2) == DEFAULT_FS
    assert frame_rate_condition(24.0, 2, fs=5) == 5


def test_seeds_depend_on_the_clip_and_the_base_seed_only(tmp_path):
    a, b = ClipRecord(tmp_path / "x" / "a.mp4"), ClipRecord(tmp_path / "y" / "a.mp4")
    assert clip_seed(a, 1, 1) == clip_seed(b, 1, 1)  # machine-independent: the file name, not the folder
    assert clip_seed(a, 1, 1) != clip_seed(a, 2, 1)
    assert clip_seed(a, 1, 1) != clip_seed(ClipRecord(a.path, start=5), 1, 1)
    assert 0 <= clip_seed(a, 1, 1) < 2**63
    assert clip_id(a) != clip_id(b) and clip_id(a).startswith("a-")


def test_cache_round_trip_and_invalidation(tmp_path):
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    path = cache.entry_path(tmp_path, "shot-abc", "toonctl:ft v2")
    assert path.name == "toonctl_ft_v2.npz"
    assert cache.load(path, {"a": 1}) is None
    cache.store(path, frames, {"a": 1, "b": [1, 2]}, seconds=1.5)
    got, seconds = cache.load(path, {"a": 1, "b": [1, 2]})
    assert np.array_equal(got, frames) and seconds == 1.5
    assert cache.load(path, {"a": 2, "b": [1, 2]}) is None  # other settings: made again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    path.write_bytes(b"truncated")
    assert cache.load(path, {"a": 1, "b": [1, 2]}) is None


def test_a_video_gives_its_fps_and_a_manifest_its_range_and_caption(tmp_path):
    from PIL import Image

    from toonctl.io.clips import discover_clips
    from toonctl.io.video import write_frames

    frames = np.stack(
        [np.asarray(Image.open(draw_key(tmp_path / f"{i}.png", 4 + 5 * i, size=(32, 64)))) for i in range(9)]
    )
    video = write_frames(frames, tmp_path / "shot.mp4", fps=24)
    win = plan_window(ClipRecord(video), num_frames=4, frame_stride=2, seed=0)
    assert win.fps == pytest.approx(24) and win.fs == 12 and win.playback_fps == pytest.approx(12)
    manifest = tmp_path / "test.csv"
    manifest.write_text("path,caption,fps,start,end\nshot.mp4,a ball,12,2,9\n")
    (clip,) = discover_clips([manifest])
    win = plan_window(clip, num_frames=4, frame_stride=2, seed=0)
    assert win.fs == 6 and clip.caption == "a ball"
    first = read_window(win, (32, 64))[0].astype(float)  # the row's start (mp4 is lossy: nearest frame)
    errors = [np.abs(first - f).mean() for f in frames]
    assert int(np.argmin(errors)) == 2
    with pytest.raises(DataError):
        plan_window(clip, num_frames=5, frame_stride=2, seed=0)  # 7 frames in [2, 9): a window of 9 does not fit


def test_an_interrupted_run_keeps_what_was_made_and_leaves_no_partial_file(folder_clip, tmp_path):
    from toonctl.evaluation.engines import BlendEngine
    from toonctl.evaluation.runner import EvalOptions, run_evaluation

    class Interrupted(BlendEngine):
        name = "flaky"
        calls = 0
        closed = False

        def interpolate(self, keys, **kwargs):
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return super().interpolate(keys, **kwargs)

        def close(self):
            Interrupted.closed = True

    second = ClipRecord(folder_clip.path, start=1)
    options = EvalOptions(output=tmp_path / "out", size=(32, 64), num_frames=4, media=False)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation([folder_clip, second], [Interrupted()], lambda: None, options)
    made = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert made == ["flaky.npz", "real.npz", "real.npz"] and Interrupted.closed
