"""The dataset folder: where each piece lives, atomic writes, and the manifest written from the parts.

Layout of ``DATASET/``::

    build.json                 the settings it was built with (a re-run with others is refused)
    parts/<episode>.json       one finished episode: every clip with its measures (the "done" marker)
    parts/<episode>.failed.json  an episode that could not be used, and why (retried by the next run)
    parts/<episode>.samples.npz  first, middle and last frame of each analysed clip (256 px wide), for
                               the scores and the contact sheet
    parts/<episode>.scores.json  its CLIP scores, when computed (``scoring``)
    clips/<episode>/<shot>-<piece>.mp4   the clip files (not with --reference)
    manifest.csv               the kept clips, for ``toonctl train`` (``toonctl.io.clips.read_manifest``)
    scores.jsonl               every analysed clip, kept or dropped, with every measure and score
    report/                    see ``toonctl.dataset.report``

An episode's part is written last, atomically, after its clip folder was renamed into place: a killed run
leaves no part for the episode in flight, and the next run redoes just that one. ``manifest.csv`` and
``scores.jsonl`` are rewritten from all parts at the end of every build or merge.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from toonctl.errors import DataError
from toonctl.io.atomic import write_bytes_atomic, write_text_atomic
from toonctl.io.clips import ClipRecord, write_manifest

BUILD_FILE = "build.json"
PARTS = "parts"
CLIPS = "clips"
MANIFEST = "manifest.csv"
SCORES = "scores.jsonl"
REPORT = "report"
FAILED_SUFFIX = ".failed.json"
SAMPLES_SUFFIX = ".samples.npz"
SCORES_SUFFIX = ".scores.json"
# Measures copied from a clip's entry into the manifest's extra columns (scores are added by name).
MANIFEST_MEASURES = ("episode", "source_start", "source_end", "frames", "distinct", "drawing_rate", "flow", "text")


def part_path(root: Path, key: str) -> Path:
    return root / PARTS / f"{key}.json"


def failed_path(root: Path, key: str) -> Path:
    return root / PARTS / f"{key}{FAILED_SUFFIX}"


def samples_path(root: Path, key: str) -> Path:
    return root / PARTS / f"{key}{SAMPLES_SUFFIX}"


def clip_folder(root: Path, key: str) -> Path:
    return root / CLIPS / key


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def write_samples(path: Path, samples: dict[str, np.ndarray]) -> None:
    """``{clip name: (3, H, W, 3) uint8}`` as a compressed npz, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **samples)
    write_bytes_atomic(path, buffer.getvalue())


def read_samples(root: Path, key: str) -> dict[str, np.ndarray]:
    path = samples_path(root, key)
    if not path.is_file():
        return {}
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="delete it: the next build redoes that episode") from None


def iter_parts(root: Path) -> Iterator[dict]:
    """Every finished episode's part, in name order."""
    folder = root / PARTS
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            if not path.name.endswith((FAILED_SUFFIX, SCORES_SUFFIX)) and not path.name.startswith("."):
                yield read_json(path)


def iter_failures(root: Path) -> Iterator[dict]:
    folder = root / PARTS
    if folder.is_dir():
        for path in sorted(folder.glob(f"*{FAILED_SUFFIX}")):
            yield read_json(path)


def kept_clips(parts: list[dict]) -> list[dict]:
    return [clip for part in parts for clip in part["clips"] if clip["status"] == "kept"]


def analysed_clips(parts: list[dict]) -> list[dict]:
    return [clip for part in parts for clip in part["clips"] if clip["dropped_by"] != "short"]


def clip_record(root: Path, part: dict, clip: dict) -> ClipRecord:
    """The manifest row of a kept clip: its own file (``copy``), or its frames of the episode file."""
    extra = {"episode": part["episode"], "source_start": clip["start"], "source_end": clip["end"]}
    extra.update({name: clip[name] for name in MANIFEST_MEASURES if name in clip and name not in extra})
    extra.update(clip.get("scores") or {})
    extra = {k: _text(v) for k, v in extra.items() if v is not None}
    if clip.get("path"):
        return ClipRecord(root / clip["path"], clip["caption"], part["fps"], 0, clip["frames"], extra)
    return ClipRecord(Path(part["source"]), clip["caption"], part["fps"], clip["start"], clip["end"], extra)


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_outputs(root: Path, parts: list[dict]) -> tuple[int, int]:
    """``manifest.csv`` (kept clips) and ``scores.jsonl`` (every analysed clip); returns their row counts."""
    records = [clip_record(root, part, clip) for part in parts for clip in part["clips"] if clip["status"] == "kept"]
    write_manifest(records, root / MANIFEST)
    lines = [
        json.dumps({"episode": part["episode"], "source": part["source"], "fps": part["fps"], **clip})
        for part in parts
        for clip in part["clips"]
        if clip["dropped_by"] != "short"
    ]
    write_text_atomic(root / SCORES, "".join(line + "\n" for line in lines))
    return len(records), len(lines)
