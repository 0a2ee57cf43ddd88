"""The episodes of a build: video files given directly or found in folders, their keys, and sharding.

An episode's key names its part, marker and clip folder in the dataset. It is the file's stem plus a short
hash of its path relative to the input it was found under (or its name, for a file given directly), so
two machines that mount the footage at different places give the same keys, and ``--shard I/N`` splits
the same sorted list the same way everywhere.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from toonctl.errors import DataError
from toonctl.io.clips import VIDEO_SUFFIXES
from toonctl.io.frames import natural_key


@dataclass(frozen=True)
class Episode:
    """One input video. ``name``: its path relative to the input folder (or its file name)."""

    path: Path
    name: str

    @property
    def key(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.name).stem)[:60] or "episode"
        return f"{stem}-{hashlib.sha1(self.name.encode('utf-8')).hexdigest()[:8]}"


def find_episodes(inputs: list[Path], exclude: Path | None = None) -> list[Episode]:
    """Episodes under ``inputs``, sorted by name: files as given (any suffix: a file that is no video fails
    later, as its own episode), folders searched recursively for ``VIDEO_SUFFIXES``, except under
    ``exclude`` (the dataset being written, when it lies inside an input folder).

    Raises:
        DataError: an input that does not exist, or no episode at all.
    """
    found: dict[Path, Episode] = {}
    excluded = exclude.resolve() if exclude is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.setdefault(path.resolve(), Episode(path, path.name))
        elif path.is_dir():
            for video in path.rglob("*"):
                hidden = any(part.startswith(".") for part in video.relative_to(path).parts)
                if excluded is not None and video.resolve().is_relative_to(excluded):
                    continue
                if video.is_file() and not hidden and video.suffix.lower() in VIDEO_SUFFIXES:
                    found.setdefault(video.resolve(), Episode(video, video.relative_to(path).as_posix()))
        else:
            raise DataError(f"{path} does not exist", hint="give video files or folders holding them")
    if not found:
        raise DataError(
            "no episode found in " + ", ".join(map(str, inputs)), hint=f"videos: {', '.join(VIDEO_SUFFIXES)}"
        )
    episodes = sorted(found.values(), key=lambda e: (tuple(map(natural_key, Path(e.name).parts)), e.key))
    keys = [e.key for e in episodes]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise DataError(f"two inputs have the same relative name ({duplicate})", hint="give them from one folder")
    return episodes


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected I/N (e.g. 0/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise ValueError(f"need 0 <= I < N, got {index}/{count}")
    return index, count


def shard(episodes: list[Episode], index: int, count: int) -> list[Episode]:
    """Episodes ``index, index + count, ...`` of the sorted list: N shards are disjoint and cover it all."""
    return episodes[index::count]
