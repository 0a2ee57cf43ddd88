"""Training metrics out of the engine: TensorBoard (optional dependency) or a CSV file, and a console line.

``MetricsLogger`` writes scalars (loss, learning rate, grad norm, throughput, the objective's extras) under
``RUN/logs/``: always ``metrics.csv`` (one row per logged step; columns added as new metrics appear), and
TensorBoard event files too when ``tensorboard`` is installed (``pip install tensorboard``). On resume, CSV rows
past the resumed step are dropped (and TensorBoard purges them) so a curve has no duplicated steps.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping
from pathlib import Path

from toonctl.io.atomic import write_text_atomic


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:  # ImportError, or a tensorboard that fails to import beside this torch
        return False
    return True


class MetricsLogger:
    """Scalars per step into ``folder``: ``metrics.csv``, plus TensorBoard if available and ``backend`` allows
    (``auto``, ``tensorboard`` or ``csv``)."""

    def __init__(self, folder: str | Path, *, start_step: int = 0, backend: str = "auto") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        use_tb = backend == "tensorboard" or (backend == "auto" and tensorboard_available())
        self.backend = "tensorboard" if use_tb else "csv"
        self._writer = None
        if use_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder), purge_step=start_step + 1 if start_step else None)
        self.csv_path = self.folder / "metrics.csv"
        self._rows = self._read_rows(start_step)

    def _read_rows(self, start_step: int) -> list[dict[str, str]]:
        if not self.csv_path.is_file():
            return []
        rows = list(csv.DictReader(io.StringIO(self.csv_path.read_text(encoding="utf-8"))))
        return [row for row in rows if int(float(row.get("step") or 0)) <= start_step]

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(name, value, step)
            self._writer.flush()
        self._rows.append({"step": str(step), **{k: f"{v:.8g}" for k, v in metrics.items()}})
        columns: dict[str, None] = {}
        for row in self._rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        write_text_atomic(self.csv_path, buffer.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as numbers (empty cells skipped)."""
    rows = csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8")))
    return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in rows]


class Throughput:
    """Samples per second over the steps since the last ``take``."""

    def __init__(self) -> None:
        self._since = time.perf_counter()
        self._samples = 0

    def add(self, samples: int) -> None:
        self._samples += samples

    def take(self) -> float:
        now = time.perf_counter()
        rate = self._samples / max(now - self._since, 1e-9)
        self._since, self._samples = now, 0
        return rate


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``loss 0.1234  lr 1e-06  grad 0.5`` for the progress line."""
    parts = []
    for name, label in (("loss", "loss"), ("lr", "lr"), ("grad_norm", "grad"), ("samples_per_s", "clips/s")):
        if name in metrics and math.isfinite(metrics[name]):
            parts.append(f"{label} {metrics[name]:.4g}")
    return "  ".join(parts)
