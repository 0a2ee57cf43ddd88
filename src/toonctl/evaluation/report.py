"""The evaluation report: per clip and engine rows, means per engine, and the JSON / CSV files.

Means: each frame metric is averaged over the clips that have a value (a clip without a caption has no
``clip_txt``; a frame without an edge block no ``cpbd``), and ``clips`` counts the clips of an engine. FVD and
KVD are per engine already (they compare sets). The ``real`` row holds the real frames' own ``cpbd`` and
``clip_txt``, the reference for those two.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toonctl.evaluation.scoring import FRAME_METRICS, SET_METRICS

ROW_COLUMNS = ("clip", "path", "engine", *FRAME_METRICS, "seconds")
SUMMARY_COLUMNS = ("engine", "clips", *FRAME_METRICS, *SET_METRICS, "seconds")
LOWER_IS_BETTER = {"lpips", "fvd", "kvd"}
REFERENCE = "real"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


@dataclass
class EvalReport:
    """``header``: settings and versions; ``clips``: one entry per clip (window, seed, status); ``rows``: one
    per clip and engine (and the ``real`` reference); ``set_scores``: ``{engine: {"fvd", "kvd"}}``;
    ``unavailable``: ``{metric: reason}``."""

    header: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    set_scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def engines(self) -> list[str]:
        return list(dict.fromkeys(r["engine"] for r in self.rows if r["engine"] != REFERENCE))

    def summary(self) -> list[dict[str, Any]]:
        """One row per engine (then ``real``): means over clips, FVD and KVD."""
        out = []
        for engine in [*self.engines, REFERENCE]:
            members = [r for r in self.rows if r["engine"] == engine]
            if not members:
                continue
            row: dict[str, Any] = {"engine": engine, "clips": len(members)}
            for key in (*FRAME_METRICS, "seconds"):
                row[key] = _mean(r.get(key) for r in members)
            for key in SET_METRICS:
                row[key] = self.set_scores.get(engine, {}).get(key)
            out.append(row)
        return out

    def explanations(self) -> list[str]:
        """One line per reason a metric is missing (metrics sharing a reason together), then the notes."""
        by_reason: dict[str, list[str]] = {}
        for metric, reason in self.unavailable.items():
            by_reason.setdefault(reason, []).append(metric)
        return [f"{', '.join(metrics)}: {reason}" for reason, metrics in by_reason.items()] + self.notes

    def to_dict(self) -> dict[str, Any]:
        data = {
            "report": self.header,
            "unavailable": self.unavailable,
            "notes": self.notes,
            "summary": self.summary(),
            "clips": self.clips,
            "results": self.rows,
        }
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)

    def to_csv(self) -> str:
        """Per clip and engine rows, then one ``mean`` row per engine (``clip`` = ``mean``) with FVD and KVD."""
        buffer = io.StringIO()
        columns = (*ROW_COLUMNS, *SET_METRICS)
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow([_csv(row.get(c)) for c in columns])
        for row in self.summary():
            writer.writerow([_csv({**row, "clip": "mean", "path": ""}.get(c)) for c in columns])
        return buffer.getvalue()

    def write(self, folder: Path) -> dict[str, Path]:
        """``report.json`` and ``report.csv`` in ``folder``, each written atomically."""
        from toonctl.io.atomic import write_text_atomic

        paths = {"json": Path(folder) / "report.json", "csv": Path(folder) / "report.csv"}
        write_text_atomic(paths["json"], self.to_json() + "\n")
        write_text_atomic(paths["csv"], self.to_csv())
        return paths

    def table(self):
        """A Rich table of the means, the best value per column in bold (``explanations`` says what is missing)."""
        from rich.table import Table

        h = self.header
        title = (
            f"toonctl eval: {h.get('clips_evaluated', 0)} clip(s), {h['num_frames']} frames every "
            f"{h['frame_stride']} at {h['height']}×{h['width']}"
        )
        table = Table(title=title, title_justify="left")
        metrics = [m for m in (*FRAME_METRICS, *SET_METRICS) if m not in self.unavailable]
        table.add_column("engine")
        table.add_column("clips", justify="right")
        for m in metrics:
            arrow = "↓" if m in LOWER_IS_BETTER else "↑"
            table.add_column(f"{m.upper() if m in SET_METRICS else m} {arrow}", justify="right")
        table.add_column("s/clip", justify="right")
        summary = self.summary()
        engines = [r for r in summary if r["engine"] != REFERENCE]
        best = {}
        for m in metrics:
            values = [r[m] for r in engines if r[m] is not None]
            if len(values) > 1:
                best[m] = min(values) if m in LOWER_IS_BETTER else max(values)
        for row in summary:
            cells = []
            for m in metrics:
                text = _fmt(row[m], m)
                cells.append(f"[bold]{text}[/]" if row["engine"] != REFERENCE and best.get(m) == row[m] else text)
            style = "dim" if row["engine"] == REFERENCE else None
            table.add_row(row["engine"], str(row["clips"]), *cells, _fmt(row["seconds"], "seconds"), style=style)
        return table


def _fmt(value, metric: str) -> str:
    if value is None:
        return "—"
    if metric in ("psnr", "fvd", "seconds"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def _csv(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "nan")
    return str(value)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
