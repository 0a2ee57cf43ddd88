"""Training data (``toonctl.training.data``): windows, strides, fs, fitting, skipping bad clips, the stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from toonctl.errors import DataError
from toonctl.io.clips import ClipRecord
from toonctl.io.video import write_frames
from toonctl.training.data import (
    ClipDataset,
    DataSettings,
    SampleKey,
    StreamSampler,
    build_dataset,
    choose_window,
    collate,
    fitting_stride,
    frame_rate_condition,
    make_loader,
    parse_stride,
)


def ramp(count: int, size=(32, 48)) -> np.ndarray:
    """Frames whose grey level encodes their index (robust to lossy coding)."""
    h, w = size
    return np.stack([np.full((h, w, 3), 10 + 12 * i, np.uint8) for i in range(count)])


def index_of(frame: torch.Tensor) -> int:
    """The frame index of a ``(3, H, W)`` [-1, 1] frame made by ``ramp``."""
    level = (frame.mean().item() / 2 + 0.5) * 255
    return round((level - 10) / 12)


def frame_folder(path, count, size=(32, 48)):
    path.mkdir(parents=True)
    for i, frame in enumerate(ramp(count, size)):
        Image.fromarray(frame).save(path / f"{i:03d}.png")
    return path


SMALL = DataSettings(size=(32, 64), num_frames=4, stride=(1, 3))


def test_parse_stride():
    assert parse_stride("1:6") == (1, 6) and parse_stride("4") == (4, 4)
    for bad in ("0:3", "5:2", "a:b", "1:2:3", ""):
        with pytest.raises(ValueError):
            parse_stride(bad)


def test_stride_shrinks_to_fit_and_fs_is_fps_over_stride():
    assert fitting_stride(100, 16, 6) == 6
    assert fitting_stride(46, 16, 6) == 3  # the largest that fits (45 // 15)
    assert fitting_stride(16, 16, 6) == 1
    assert fitting_stride(15, 16, 1) == 0  # too short
    assert [frame_rate_condition(30, s, 24) for s in range(1, 7)] == [30, 15, 10, 7, 6, 5]
    assert frame_rate_condition(None, 2, 24) == 12  # frame folders: --default-fps
    assert frame_rate_condition(23.976, 1, 24) == 23


def test_windows_cover_the_stride_range_and_stay_inside():
    rng = np.random.default_rng(0)
    settings = DataSettings(size=(32, 64), num_frames=16, stride=(1, 6))
    windows = [choose_window(60, settings, rng) for _ in range(300)]
    assert {w.stride for w in windows} == {1, 2, 3}  # 4..6 do not fit 16 frames into 60
    assert all(0 <= w.start and w.indices[-1] < 60 for w in windows)
    assert choose_window(15, settings, rng) is None


def test_sample_from_a_video_and_a_frame_folder(tmp_path):
    video = write_frames(ramp(12), tmp_path / "a.mp4", fps=12)
    folder = frame_folder(tmp_path / "b", 10)
    dataset = ClipDataset([ClipRecord(video, caption="ball"), ClipRecord(folder)], SMALL)
    for index, fps in ((0, 12), (1, 24)):
        sample = dataset[SampleKey(index, seed=5)]
        assert sample["video"].shape == (3, 4, 32, 64) and sample["video"].dtype == torch.float32
        assert -1 <= sample["video"].min() and sample["video"].max() <= 1
        stride = sample["frame_stride"]
        assert sample["fps"] == fps // stride and sample["skipped"] == []
        got = [index_of(sample["video"][:, i]) for i in range(4)]
        assert [b - a for a, b in zip(got, got[1:], strict=False)] == [stride] * 3
    assert dataset[SampleKey(0, 5)]["caption"] == "ball"
    same = dataset[SampleKey(1, 5)]["video"]
    assert torch.equal(same, dataset[SampleKey(1, 5)]["video"])  # the seed fixes every choice


def test_fit_crop_and_pad(tmp_path):
    folder = frame_folder(tmp_path / "square", 4, size=(64, 64))
    for fit, corner in (("crop", True), ("pad", False)):
        settings = DataSettings(size=(32, 64), num_frames=4, stride=(1, 1), fit=fit)
        video = ClipDataset([ClipRecord(folder)], settings)[0]["video"]
        assert video.shape == (3, 4, 32, 64)
        assert (video[:, 0, 0, 0].abs() < 0.99).all() == corner  # pad: white (1.0) bars at the sides


def test_bad_clips_are_skipped_and_reported(tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"not a video at all")
    short = frame_folder(tmp_path / "short", 2)
    good = frame_folder(tmp_path / "good", 6)
    dataset = ClipDataset([ClipRecord(corrupt), ClipRecord(short), ClipRecord(good)], SMALL)
    sample = dataset[SampleKey(0, 1)]
    assert sample["path"] == str(good)
    assert [p for p, _ in sample["skipped"]] == [str(corrupt), str(short)]
    assert "fewer than the 4 needed" in sample["skipped"][1][1]
    with pytest.raises(DataError, match="none of the 2 clips"):
        ClipDataset([ClipRecord(corrupt), ClipRecord(short)], SMALL)[0]


def test_empty_inputs_are_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no clips found"):
        build_dataset([tmp_path / "empty"], SMALL)
    with pytest.raises(DataError, match="does not exist"):
        build_dataset([tmp_path / "missing"], SMALL)


def test_stream_is_the_same_for_any_process_count_and_resumes():
    one = StreamSampler(num_clips=5, batch_size=4, seed=3)
    two = [StreamSampler(num_clips=5, batch_size=2, seed=3, num_processes=2, process_index=p) for p in (0, 1)]
    for k in range(4):
        assert one.batch(k) == two[0].batch(k) + two[1].batch(k)
    epoch0 = sorted(key.index for k in range(5) for key in StreamSampler(5, 1, seed=3).batch(k))
    assert epoch0 == [0, 1, 2, 3, 4]  # each epoch is a permutation
    resumed = iter(StreamSampler(num_clips=5, batch_size=4, seed=3, start_batch=2))
    assert next(resumed) == one.batch(2)
    assert StreamSampler(5, 4, seed=4).batch(0) != one.batch(0)


def test_loader_with_workers_gives_the_same_batches(tmp_path):
    folder = frame_folder(tmp_path / "clip", 8)
    dataset = ClipDataset([ClipRecord(folder, caption="x")], SMALL)
    batches = []
    for workers in (0, 1):
        loader = iter(make_loader(dataset, StreamSampler(1, batch_size=2, seed=7), num_workers=workers))
        batches.append([next(loader) for _ in range(2)])
    for (a, _), (b, skipped) in zip(*batches, strict=True):
        assert torch.equal(a.video, b.video) and torch.equal(a.fs, b.fs) and skipped == []
    batch, _ = collate([dataset[0], dataset[0]])
    assert batch.video.shape == (2, 3, 4, 32, 64) and batch.prompts == ["x", "x"]


def add_hints(sample, rng):
    """A sample hook: a sketch on one random frame (module level: picklable for the workers)."""
    t, h, w = sample["video"].shape[1:]
    mask = torch.zeros(t, dtype=torch.bool)
    mask[int(rng.integers(0, t))] = True
    return {**sample, "hints": torch.zeros(1, t, h, w), "hint_mask": mask}


def test_sample_hook_adds_hints_to_the_batch(tmp_path):
    folder = frame_folder(tmp_path / "clip", 8)
    dataset = ClipDataset([ClipRecord(folder)], SMALL, sample_hook=add_hints)
    loader = iter(make_loader(dataset, StreamSampler(1, batch_size=2, seed=1), num_workers=1))
    batch, _ = next(loader)
    assert batch.hints.shape == (2, 1, 4, 32, 64) and batch.hint_mask.shape == (2, 4)
    assert batch.hint_mask.sum(dim=1).tolist() == [1, 1]
