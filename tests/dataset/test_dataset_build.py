"""``build_dataset`` end to end on synthetic episodes: filters, manifest, resume, shards + merge, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset.synthetic import CAPTION, FPS, SHOT_FRAMES, episode_frames
from toonctl.dataset import store
from toonctl.dataset.build import build_dataset
from toonctl.dataset.merge import merge_datasets
from toonctl.dataset.settings import BuildSettings
from toonctl.errors import DataError
from toonctl.io.clips import discover_clips, read_clip_frames, read_manifest


def _scores(root):
    return [json.loads(line) for line in (root / store.SCORES).read_text().splitlines()]


def test_static_shot_dropped_twos_detected_manifest_readable_by_train(built, episodes):
    rows = {(r["source"].split("/")[-1], r["clip"]): r for r in _scores(built)}
    assert len(rows) == 6  # two episodes, three shots each, all analysed
    assert rows[("ep1.mp4", "0001-00")]["dropped_by"] == "static"
    assert rows[("ep2.mp4", "0000-00")]["dropped_by"] == "static"
    assert rows[("ep1.mp4", "0001-00")]["flow"] == 0.0
    assert rows[("ep1.mp4", "0002-00")]["drawing_rate"] == 2  # the shot on twos
    assert rows[("ep1.mp4", "0002-00")]["distinct"] == SHOT_FRAMES // 2
    assert rows[("ep1.mp4", "0000-00")]["drawing_rate"] == 1

    clips = discover_clips([built])  # what `toonctl train` reads
    assert len(clips) == 4
    assert all(c.fps == FPS and c.start == 0 and c.end == SHOT_FRAMES for c in clips)
    assert {c.caption for c in clips} == {CAPTION, "a cartoon"}  # sidecar of ep1, the prompt for ep2
    by_source = {(c.extra["episode"].split("-")[0], int(c.extra["source_start"])): c for c in clips}
    assert set(by_source) == {("ep1", 0), ("ep1", 48), ("ep2", 24), ("ep2", 48)}
    assert by_source[("ep1", 48)].extra["drawing_rate"] == "2"
    # The clip file holds the episode's frames 48..71 (the shot on twos), up to H.264 noise (two encodings).
    frames = read_clip_frames(by_source[("ep1", 48)], range(SHOT_FRAMES)).astype(int)
    assert np.abs(frames - episode_frames(("twos",))).mean() < 6
    disc_x = [np.nonzero(frame.min(axis=-1) > 200)[1].mean() for frame in frames]  # the white disc's centre
    assert np.allclose(disc_x, [12 + 4 * (t // 2) for t in range(SHOT_FRAMES)], atol=1)  # frame t is frame t


def test_report_counts_each_filter_and_draws_the_figures(built):
    summary = json.loads((built / "report" / "summary.json").read_text())
    assert summary["dropped"] == {"short": 0, "static": 2, "text": 0, "alignment": 0, "aesthetic": 0}
    assert (summary["kept"], summary["clips"], summary["shots"], summary["episodes"]) == (4, 6, 6, 2)
    assert summary["kept_seconds"] == pytest.approx(4 * SHOT_FRAMES / FPS)
    assert summary["drawing_rates"] == {"1": 2, "2": 2}
    assert summary["filters"]["text"].startswith("off")
    assert summary["static_threshold_effect"]["0.25"] == 2
    for name in ("flow.png", "duplicate_rate.png", "drawing_rate.png", "contact_sheet.png", "dropped.png"):
        assert (built / "report" / name).stat().st_size > 1000
    assert "static" in (built / "report" / "README.md").read_text()


def test_reference_mode_points_into_the_episodes(episodes, tmp_path):
    root = tmp_path / "ref"
    build_dataset([episodes / "ep1.mp4"], root, BuildSettings(copy=False))
    clips = read_manifest(root / "manifest.csv")
    assert [(c.path.name, c.start, c.end) for c in clips] == [("ep1.mp4", 0, 24), ("ep1.mp4", 48, 72)]
    assert not (root / "clips").exists()
    frames = read_clip_frames(clips[1], [0, 23])
    assert np.abs(frames.astype(int) - episode_frames(("twos",))[[0, 23]]).mean() < 6


def test_resume_after_a_kill_loses_nothing(episodes, built, tmp_path):
    root = tmp_path / "resumed"
    # A run killed after its first episode (ep1 done) and in the middle of the second (its leftovers).
    first = build_dataset([episodes / "ep1.mp4"], root, BuildSettings(prompt="a cartoon"))
    assert first.processed == 1
    done_marker = store.part_path(root, "ep1-d1ed7f25")
    assert done_marker.is_file()
    stamp = done_marker.stat().st_mtime_ns
    stale = root / "clips" / ".ep2-xxxxxxxx.partial"
    stale.mkdir(parents=True)
    (stale / "0000-00.mp4").write_bytes(b"half a clip")
    second = build_dataset([episodes], root, BuildSettings(prompt="a cartoon"))
    assert (second.resumed, second.processed) == (1, 1)
    assert done_marker.stat().st_mtime_ns == stamp  # ep1 was not redone
    assert (root / "manifest.csv").read_text() == (built / "manifest.csv").read_text()
    assert _scores(root) == _scores(built)


def test_other_settings_are_refused_on_resume(episodes, built):
    with pytest.raises(DataError, match="other settings.*min_flow"):
        build_dataset([episodes], built, BuildSettings(prompt="a cartoon", min_flow=1.0))


def test_two_shards_merged_equal_one_run(episodes, built, tmp_path):
    settings = BuildSettings(prompt="a cartoon")
    a = build_dataset([episodes], tmp_path / "a", settings, shard_index=0, shard_count=2)
    b = build_dataset([episodes], tmp_path / "b", settings, shard_index=1, shard_count=2, workers=2)
    assert (a.processed, b.processed) == (1, 1)  # disjoint halves
    summary = merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    merged = tmp_path / "merged"
    assert (merged / "manifest.csv").read_text() == (built / "manifest.csv").read_text()
    assert _scores(merged) == _scores(built)
    assert summary["kept"] == 4
    assert all(c.path.is_file() for c in discover_clips([merged]))


def test_bad_inputs_are_skipped_reported_and_counted(episodes, bad_inputs, tmp_path):
    root = tmp_path / "bad"
    warnings = []
    inputs = [bad_inputs["garbage"], bad_inputs["empty"], bad_inputs["audio"], episodes / "ep1.mp4"]
    result = build_dataset(inputs, root, BuildSettings(), on_failure=lambda name, why: warnings.append((name, why)))
    reasons = dict(warnings)
    assert set(reasons) == {"garbage.mp4", "empty.mp4", "audio.m4a"}
    assert "empty file" in reasons["empty.mp4"]
    assert "audio-only" in reasons["audio.m4a"]
    assert "not a video ffmpeg can decode" in reasons["garbage.mp4"]
    assert result.processed == 1 and result.summary["kept"] == 2
    assert result.summary["failed_episodes"] == 3
    assert "audio.m4a" in (root / "report" / "README.md").read_text()
    # A re-run retries them (they may have been fixed) and still counts them.
    again = build_dataset(inputs, root, BuildSettings())
    assert (again.resumed, len(again.failed), again.summary["failed_episodes"]) == (1, 3, 3)


def test_captions_from_a_csv_with_frame_ranges(episodes, tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text("episode,caption,start,end\nep1,the red room,0,24\nep1.mp4,the blue room,48,\n")
    root = tmp_path / "csv"
    build_dataset([episodes / "ep1.mp4"], root, BuildSettings(captions_csv=str(table)))
    assert [c.caption for c in read_manifest(root / "manifest.csv")] == ["the red room", "the blue room"]


def test_a_dataset_inside_the_input_folder_is_not_read_as_episodes(episodes, tmp_path):
    inputs = Path(shutil.copytree(episodes, tmp_path / "episodes"))
    first = build_dataset([inputs], inputs / "data", BuildSettings())
    again = build_dataset([inputs], inputs / "data", BuildSettings())
    assert (first.processed, again.resumed, again.processed, again.summary["episodes"]) == (2, 2, 0, 2)


def test_a_missing_input_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset([tmp_path / "nope"], tmp_path / "out", BuildSettings())
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
