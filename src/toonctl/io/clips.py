"""Clips of a dataset: where they are, their captions and frame rates, and reading their frames.

One place defines what a "clip" is for every command that reads footage in bulk (``toonctl train``,
``toonctl eval``) or writes it (``toonctl dataset build``):

* a video file (``.mp4``, ``.webm``, ... through ffmpeg; animated ``.gif``/``.webp``/``.apng`` through Pillow),
  optionally cut to frames ``[start, end)``;
* a folder of frames (image files in natural name order);
* a row of a manifest: CSV or JSONL with the columns ``path, caption, fps, start, end`` (``path`` relative
  to the manifest's folder, or absolute; other columns are kept in ``ClipRecord.extra``). WebVid-style CSVs
  (``videoid, name, page_dir``, as DynamiCrafter's trainer reads them) are accepted too: the video is
  ``<manifest folder>/videos/<page_dir>/<videoid>.mp4`` and ``name`` is the caption.

Captions of clips found in folders come from a sidecar text file with the clip's name (``shot.mp4`` ->
``shot.txt``; a frame folder ``shot/`` -> ``shot.txt`` beside it), else a ``prompt.txt`` in the clip's own
folder (for a frame folder) or in the folder holding the clip, else "".
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toonctl.errors import DataError
from toonctl.io.atomic import write_text_atomic
from toonctl.io.frames import IMAGE_SUFFIXES, MAX_PIXELS, list_frame_files, natural_key

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")  # decoded by ffmpeg
ANIMATION_SUFFIXES = (".gif", ".webp", ".apng")  # decoded by Pillow (a still image is a one-frame clip)
MANIFEST_SUFFIXES = (".csv", ".jsonl")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")  # a folder holding one of these is read through it
MANIFEST_COLUMNS = ("path", "caption", "fps", "start", "end")
WEBVID_COLUMNS = ("videoid", "name", "page_dir")
PROMPT_FILE = "prompt.txt"
SKETCH_FOLDER = "sketches"  # the clips' line art beside them (toonctl train sketch-encoder): never a clip


@dataclass(frozen=True)
class ClipRecord:
    """One clip.

    Attributes:
        path: a video file or a folder of frames.
        caption: the text describing the clip ("" when none).
        fps: the source frame rate (None: unknown, e.g. a folder of frames).
        start: first frame of the clip in ``path`` (inclusive).
        end: one past the last frame (None: to the end of ``path``).
        extra: the other columns of its manifest row (scores, drawing rate, ...), as text.
    """

    path: Path
    caption: str = ""
    fps: float | None = None
    start: int = 0
    end: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise DataError(f"{self.path}: bad frame range [{self.start}, {self.end})")


# --------------------------------------------------------------------------------------------- manifests


def read_manifest(path: str | Path) -> list[ClipRecord]:
    """The clips of a CSV or JSONL manifest (see the module docstring for the columns).

    Raises:
        DataError: unreadable file, missing ``path`` (or WebVid) columns, bad numbers; the message names
            the file and the row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read manifest {path}: not UTF-8 text") from None
    rows = _jsonl_rows(text, path) if path.suffix.lower() == ".jsonl" else _csv_rows(text, path)
    return [_record(row, path.parent, f"{path}, row {i}") for i, row in enumerate(rows, start=1)]


def _csv_rows(text: str, path: Path) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    if "path" not in columns and not set(WEBVID_COLUMNS) <= columns:
        raise DataError(
            f"manifest {path} has no 'path' column (columns: {', '.join(sorted(columns)) or 'none'})",
            hint=f"give the columns {', '.join(MANIFEST_COLUMNS)} (or WebVid's {', '.join(WEBVID_COLUMNS)})",
        )
    return list(reader)


def _jsonl_rows(text: str, path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"manifest {path}, line {number}: each line must be a JSON object")
        rows.append(row)
    return rows


def _record(row: Mapping, root: Path, where: str) -> ClipRecord:
    row = {str(k): v for k, v in row.items() if k is not None}
    if row.get("path") not in (None, ""):
        clip_path = Path(str(row["path"]))
        caption = row.get("caption")
    elif all(row.get(c) not in (None, "") for c in WEBVID_COLUMNS):
        clip_path = Path("videos") / str(row["page_dir"]) / f"{row['videoid']}.mp4"
        caption = row.get("name")
    else:
        raise DataError(f"{where}: no path (and no videoid/page_dir)")
    known = set(MANIFEST_COLUMNS) | ({"name"} if "path" not in row else set())
    extra = {k: "" if v is None else str(v) for k, v in row.items() if k not in known}
    return ClipRecord(
        path=clip_path if clip_path.is_absolute() else root / clip_path,
        caption="" if caption is None else " ".join(str(caption).split()),
        fps=_number(row.get("fps"), float, "fps", where),
        start=_number(row.get("start"), int, "start", where) or 0,
        end=_number(row.get("end"), int, "end", where),
        extra=extra,
    )


def _number(value, kind, column: str, where: str):
    if value is None or value == "":
        return None
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column} must be a number, got {value!r}") from None
    if number < 0 or (kind is float and not np.isfinite(number)):
        raise DataError(f"{where}: {column} must be a finite number >= 0, got {value!r}")
    return number


def write_manifest(records: Iterable[ClipRecord], path: str | Path) -> Path:
    """Write ``records`` as a CSV (or JSONL, by suffix) manifest, atomically.

    Paths inside the manifest's folder are written relative to it, so the dataset folder can be moved.
    Columns: ``MANIFEST_COLUMNS`` followed by every ``extra`` key, in first-seen order.
    """
    path = Path(path)
    records = list(records)
    extra_columns: dict[str, None] = {}
    for record in records:
        extra_columns.update(dict.fromkeys(record.extra))
    rows = [_row(record, path.parent, list(extra_columns)) for record in records]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*MANIFEST_COLUMNS, *extra_columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_text_atomic(path, text)
    return path


def _row(record: ClipRecord, root: Path, extra_columns: list[str]) -> dict:
    try:
        shown = record.path.resolve().relative_to(root.resolve())
    except ValueError:
        shown = record.path
    row = {
        "path": shown.as_posix(),
        "caption": record.caption,
        "fps": "" if record.fps is None else f"{record.fps:g}",
        "start": record.start,
        "end": "" if record.end is None else record.end,
    }
    row.update({column: record.extra.get(column, "") for column in extra_columns})
    return row


# --------------------------------------------------------------------------------------------- discovery


def discover_clips(inputs: Sequence[str | Path]) -> list[ClipRecord]:
    """Every clip under ``inputs``: video files, folders, manifests (.csv/.jsonl).

    A folder holding ``manifest.csv``/``manifest.jsonl`` (what ``toonctl dataset build`` writes) is read
    through it. Otherwise a folder with image files and no videos or sub-folders is one clip (a folder of
    frames); any other folder is searched: its videos and sub-folders, in natural name order.

    Raises:
        DataError: an input that does not exist or is not a clip, folder or manifest.
    """
    clips: list[ClipRecord] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in MANIFEST_SUFFIXES:
                clips.extend(read_manifest(path))
            elif suffix in VIDEO_SUFFIXES + ANIMATION_SUFFIXES:
                clips.append(ClipRecord(path, caption=_caption_for(path)))
            else:
                raise DataError(
                    f"{path} is not a video, a folder of clips or a manifest",
                    hint=f"videos: {', '.join(VIDEO_SUFFIXES + ANIMATION_SUFFIXES)}; manifests: .csv, .jsonl",
                )
        elif path.is_dir():
            clips.extend(_discover_folder(path))
        else:
            raise DataError(f"{path} does not exist")
    return clips


def _discover_folder(folder: Path) -> list[ClipRecord]:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return read_manifest(folder / name)
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_key)
    videos = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + ANIMATION_SUFFIXES]
    folders = [p for p in entries if p.is_dir() and p.name != SKETCH_FOLDER]
    stills = [p for p in entries if p.is_file() and p.suffix.lower() in set(IMAGE_SUFFIXES) - set(ANIMATION_SUFFIXES)]
    if stills and not folders and not any(p.suffix.lower() in VIDEO_SUFFIXES for p in videos):
        return [ClipRecord(folder, caption=_caption_for(folder))]
    clips = []
    for entry in entries:
        if entry in videos:
            clips.append(ClipRecord(entry, caption=_caption_for(entry)))
        elif entry in folders:
            clips.extend(_discover_folder(entry))
    return clips


def _caption_for(clip: Path) -> str:
    candidates = [clip.with_suffix(".txt") if clip.is_file() else clip.parent / f"{clip.name}.txt"]
    candidates += [clip / PROMPT_FILE] if clip.is_dir() else []
    candidates.append(clip.parent / PROMPT_FILE)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return " ".join(candidate.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError):
                raise DataError(f"cannot read the caption file {candidate}") from None
    return ""


# --------------------------------------------------------------------------------------------- frames


def clip_fps(record: ClipRecord) -> float | None:
    """The clip's frame rate: the manifest's, else the video's own (None for frame folders)."""
    if record.fps:
        return record.fps
    if record.path.is_file() and record.path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_meta(record.path)[1]
    return None


def clip_frame_count(record: ClipRecord) -> int:
    """Frames in the clip (``end - start`` when the range is given; else counted by decoding)."""
    total = _source_frame_count(record.path)
    end = total if record.end is None else min(record.end, total)
    return max(0, end - record.start)


def read_clip_frames(record: ClipRecord, indices: Sequence[int]) -> np.ndarray:
    """Frames ``indices`` (relative to ``record.start``) as ``(len(indices), H, W, 3)`` uint8 RGB.

    Videos are decoded from the start and the decoder stops after the last frame asked for.

    Raises:
        DataError: unreadable clip, or an index past its end.
    """
    wanted = [record.start + int(i) for i in indices]
    if not wanted:
        raise DataError(f"{record.path}: no frames asked for")
    if min(wanted) < record.start or (record.end is not None and max(wanted) >= record.end):
        raise DataError(f"{record.path}: frames {min(indices)}..{max(indices)} are outside the clip")
    path = record.path
    if path.is_dir():
        files = list_frame_files(path)
        if max(wanted) >= len(files):
            raise DataError(f"{path}: has {len(files)} frames, frame {max(wanted)} asked for")
        frames = [_read_still(files[i]) for i in wanted]
        if len({f.shape for f in frames}) > 1:
            raise DataError(f"{path}: the frames differ in size")
        return np.stack(frames)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video_frames(path, wanted)
    return _read_animation_frames(path, wanted)


def _read_still(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"cannot read {path}: {img.width}x{img.height} is too large")
            return np.asarray(img.convert("RGB"))
    except DataError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on untrusted files
        raise DataError(f"cannot read {path}: not an image Pillow can decode ({_first_line(exc)})") from None


def _read_video_frames(path: Path, wanted: list[int]) -> np.ndarray:
    import imageio_ffmpeg

    last = max(wanted)
    picked: dict[int, np.ndarray] = {}
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    except (OSError, RuntimeError) as exc:
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
    try:
        width, height = next(reader)["size"]
        for index, data in enumerate(reader):
            if index in wanted:
                picked[index] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            if index >= last:
                break
    except (OSError, RuntimeError, StopIteration, KeyError) as exc:
        raise DataError(f"cannot read {path}: not a video ffmpeg can decode ({_first_line(exc)})") from None
    finally:
        reader.close()
    missing = [i for i in wanted if i not in picked]
    if missing:
        raise DataError(f"{path}: has {len(picked) and max(picked) + 1} frames, frame {missing[0]} asked for")
    return np.stack([picked[i] for i in wanted])


def _read_animation_frames(path: Path, wanted: list[int]) -> np.ndarray:
    from PIL import Image, ImageSequence

    picked: dict[int, np.ndarray] = {}
    try:
        with Image.open(path) as img:
            for index, frame in enumerate(ImageSequence.Iterator(img)):
                if index in wanted:
                    picked[index] = np.asarray(frame.convert("RGB"))
                if index >= max(wanted):
                    break
    except Exception as exc:  # Pillow's decoders raise many types on untrusted files
        raise DataError(f"cannot read {path}: not an image Pillow can decode ({_first_line(exc)})") from None
    missing = [i for i in wanted if i not in picked]
    if missing:
        raise DataError(f"{path}: frame {missing[0]} asked for, the file has fewer")
    return np.stack([picked[i] for i in wanted])


def _source_frame_count(path: Path) -> int:
    if path.is_dir():
        return len(list_frame_files(path))
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_meta(path)[0]
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception as exc:
        raise DataError(f"cannot read {path}: not an image Pillow can decode ({_first_line(exc)})") from None


_META_CACHE: dict[tuple[str, int, int], tuple[int, float | None]] = {}


def _video_meta(path: Path) -> tuple[int, float | None]:
    """``(frame count, fps)`` of a video, counted by decoding once (cached per file version)."""
    import imageio_ffmpeg

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _META_CACHE:
        try:
            count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
            reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray")
            try:
                meta = next(reader)
            finally:
                reader.close()
        except (OSError, RuntimeError, StopIteration, KeyError) as exc:
            raise DataError(f"cannot read {path}: not a video ffmpeg can decode ({_first_line(exc)})") from None
        _META_CACHE[key] = (int(count), float(meta["fps"]) if meta.get("fps") else None)
    return _META_CACHE[key]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
