"""Captions of clips: a CSV the user gives, else a sidecar text file beside the episode, else a fixed prompt.

The CSV has the columns ``episode`` (the episode's file name, its stem, or its path relative to the input
folder) and ``caption``, and optionally ``start`` and ``end`` (frames of the episode): a clip takes the
caption of the first row of its episode whose range holds the clip's middle frame (a row without a range
holds every frame). The sidecar of ``ep01.mp4`` is ``ep01.txt``. No captioning model is run: clips
without any of these get the fixed prompt (``--prompt``), or "".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from toonctl.dataset.sources import Episode
from toonctl.errors import DataError

SOURCES = ("csv", "sidecar", "prompt", "none")


@dataclass(frozen=True)
class CaptionRow:
    caption: str
    start: int | None = None
    end: int | None = None

    def holds(self, frame: int) -> bool:
        return (self.start is None or frame >= self.start) and (self.end is None or frame < self.end)


@dataclass
class Captions:
    """Where captions come from. ``rows``: the CSV's rows by episode name."""

    prompt: str = ""
    rows: dict[str, list[CaptionRow]] = field(default_factory=dict)

    @classmethod
    def load(cls, prompt: str = "", csv_path: str | Path | None = None) -> Captions:
        """Read the CSV (when given).

        Raises:
            DataError: unreadable CSV, missing columns, bad frame numbers.
        """
        rows: dict[str, list[CaptionRow]] = {}
        if csv_path is not None:
            csv_path = Path(csv_path)
            try:
                with open(csv_path, encoding="utf-8", newline="") as stream:
                    reader = csv.DictReader(stream)
                    if not {"episode", "caption"} <= set(reader.fieldnames or ()):
                        raise DataError(
                            f"captions file {csv_path} needs the columns episode, caption",
                            hint="optional columns: start, end (frames of the episode)",
                        )
                    for number, row in enumerate(reader, start=2):
                        rows.setdefault(row["episode"].strip(), []).append(_row(row, f"{csv_path}, line {number}"))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read captions file {csv_path}: {exc}") from None
        return cls(prompt=" ".join(prompt.split()), rows=rows)

    def caption(self, episode: Episode, start: int, end: int) -> tuple[str, str]:
        """``(caption, source)`` of frames ``[start, end)`` of ``episode``; source is one of ``SOURCES``."""
        middle = (start + end - 1) // 2
        for name in (episode.name, Path(episode.name).name, Path(episode.name).stem):
            for row in self.rows.get(name, ()):
                if row.holds(middle):
                    return row.caption, "csv"
        sidecar = episode.path.with_suffix(".txt")
        if sidecar.is_file():
            try:
                return " ".join(sidecar.read_text(encoding="utf-8").split()), "sidecar"
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read the caption file {sidecar}: {exc}") from None
        return (self.prompt, "prompt") if self.prompt else ("", "none")


def _row(row: dict, where: str) -> CaptionRow:
    bounds = []
    for column in ("start", "end"):
        value = (row.get(column) or "").strip()
        try:
            bounds.append(int(value) if value else None)
        except ValueError:
            raise DataError(f"{where}: {column} must be a frame number, got {value!r}") from None
    return CaptionRow(" ".join((row.get("caption") or "").split()), *bounds)
