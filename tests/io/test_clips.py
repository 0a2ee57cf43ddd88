"""Clips and manifests (``toonctl.io.clips``): the contract shared by train, eval and dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from toonctl.errors import DataError
from toonctl.io.clips import (
    ClipRecord,
    clip_fps,
    clip_frame_count,
    discover_clips,
    read_clip_frames,
    read_manifest,
    write_manifest,
)
from toonctl.io.video import write_frames


def _ramp(count: int, size=(32, 48)) -> np.ndarray:
    """Frames whose mean grey level encodes their index (robust to lossy video coding)."""
    h, w = size
    return np.stack([np.full((h, w, 3), 10 + 12 * i, np.uint8) for i in range(count)])


def _index_of(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 10) / 12)


def test_video_frames_by_index_and_count(tmp_path):
    video = write_frames(_ramp(12), tmp_path / "shot.mp4", fps=12)
    record = ClipRecord(video)
    assert clip_frame_count(record) == 12
    assert clip_fps(record) == pytest.approx(12)
    frames = read_clip_frames(record, [0, 3, 11])
    assert frames.shape == (3, 32, 48, 3) and frames.dtype == np.uint8
    assert [_index_of(f) for f in frames] == [0, 3, 11]
    cut = ClipRecord(video, start=4, end=10)
    assert clip_frame_count(cut) == 6
    assert [_index_of(f) for f in read_clip_frames(cut, [0, 5])] == [4, 9]
    with pytest.raises(DataError, match="outside the clip"):
        read_clip_frames(cut, [6])


def test_frame_folder_and_animation(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_ramp(5)):
        Image.fromarray(frame).save(folder / f"{i + 1}.png")  # 1..5: natural order, not 1, 10, 2
    (folder / "prompt.txt").write_text("a  ball\nbounces\n")
    gif = write_frames(_ramp(4), tmp_path / "anim.gif", fps=8)
    clips = discover_clips([folder, gif])
    assert [c.path for c in clips] == [folder, gif]
    assert clips[0].caption == "a ball bounces" and clip_fps(clips[0]) is None
    assert clip_frame_count(clips[0]) == 5 and clip_frame_count(clips[1]) == 4
    assert [_index_of(f) for f in read_clip_frames(clips[0], [4, 1])] == [4, 1]
    assert [_index_of(f) for f in read_clip_frames(clips[1], [3])] == [3]


def test_discovery_of_nested_folders_with_sidecar_captions(tmp_path):
    (tmp_path / "ep1").mkdir()
    write_frames(_ramp(3), tmp_path / "ep1" / "b.mp4", fps=8)
    write_frames(_ramp(3), tmp_path / "ep1" / "a.mp4", fps=8)
    (tmp_path / "ep1" / "a.txt").write_text("clip a")
    (tmp_path / "ep1" / "prompt.txt").write_text("episode one")
    (tmp_path / "notes.md").write_text("ignored")
    clips = discover_clips([tmp_path])
    assert [(c.path.name, c.caption) for c in clips] == [("a.mp4", "clip a"), ("b.mp4", "episode one")]


def test_manifest_round_trip_csv_and_jsonl(tmp_path):
    records = [
        ClipRecord(tmp_path / "clips" / "0001.mp4", "a fox, running", 24.0, 0, 16, {"flow": "1.5"}),
        ClipRecord(tmp_path / "clips" / "0002.mp4", "", None, 3, None, {"drawing_rate": "2"}),
    ]
    for name in ("manifest.csv", "manifest.jsonl"):
        path = write_manifest(records, tmp_path / name)
        back = read_manifest(path)
        assert [(r.path, r.caption, r.fps, r.start, r.end) for r in back] == [
            (r.path, r.caption, r.fps, r.start, r.end) for r in records
        ]
        assert back[0].extra == {"flow": "1.5", "drawing_rate": ""} and back[1].extra["drawing_rate"] == "2"
    assert (tmp_path / "manifest.csv").read_text().splitlines()[0] == "path,caption,fps,start,end,flow,drawing_rate"
    assert "clips/0001.mp4" in (tmp_path / "manifest.csv").read_text()  # relative to the manifest's folder
    assert discover_clips([tmp_path])[0].path == records[0].path  # a folder with manifest.csv reads it
    assert not list(tmp_path.glob(".*partial*"))


def test_webvid_columns(tmp_path):
    (tmp_path / "webvid.csv").write_text("videoid,contentUrl,duration,page_dir,name\n42,u,PT10S,001,A cat.\n")
    (record,) = read_manifest(tmp_path / "webvid.csv")
    assert record.path == tmp_path / "videos" / "001" / "42.mp4"
    assert record.caption == "A cat." and record.extra["contentUrl"] == "u"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("caption\nx\n", "no 'path' column"),
        ("path,fps\na.mp4,fast\n", "fps must be a number"),
        ("path,start,end\na.mp4,5,2\n", "bad frame range"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_clips([tmp_path / "missing"])
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="not a video"):
        discover_clips([tmp_path / "x.bin"])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="cannot read"):
        read_clip_frames(ClipRecord(tmp_path / "broken.mp4"), [0])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "a.mp4"}) + "\n[1]\n")
    with pytest.raises(DataError, match="line 2"):
        read_manifest(tmp_path / "bad.jsonl")


def test_manifest_gets_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_manifest([ClipRecord(tmp_path / "a.mp4")], tmp_path / "sub" / "manifest.csv")
    finally:
        os.umask(umask)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600
