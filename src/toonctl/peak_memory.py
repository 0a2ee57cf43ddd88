"""Peak memory of a block of code, in bytes: the one probe of the decode benchmark and the benchmark scripts.

On a GPU: ``torch.cuda.max_memory_allocated`` after a reset (tensors only, not the allocator's cache). On the
CPU: the process's peak resident set; on Linux the kernel's high-water mark, reset at the start of the block
through ``/proc/self/clear_refs`` after returning freed heap to the system (``malloc_trim``), elsewhere a thread
sampling it every millisecond with psutil. ``peak`` is the whole process (weights included), ``before`` what
was in use at the start: ``peak - before`` is the block's own working memory.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class PeakMemory:
    """Peak memory of a ``with`` block, in bytes (``peak``; ``before``: in use at its start; None: not
    measurable here). See the module docstring."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.probe = "cuda" if device.type == "cuda" else _cpu_probe() if device.type == "cpu" else None
        self.before: int | None = None
        self.peak: int | None = None
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        import gc

        import torch

        gc.collect()
        if self.probe == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.probe is not None:
            _trim_heap()
            self.before = _rss()
            if self.probe == "hwm":
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            else:
                self._sampler = _RssSampler()
        return self

    def __exit__(self, *exc_info) -> None:
        import torch

        if self.probe == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.probe == "hwm":
            self.peak = _proc_status_kib("VmHWM") * 1024
        elif self._sampler is not None:
            self.peak = self._sampler.stop()


PROBES = {
    "cuda": "CUDA peak allocation (torch.cuda.max_memory_allocated)",
    "hwm": "peak RSS (the kernel's high-water mark, reset before each measured block)",
    "sampled": "peak RSS (sampled every 1 ms with psutil)",
    None: "not measured",
}


def memory_method(device: torch.device) -> str:
    """How ``PeakMemory`` measures on ``device``, in words (for the report)."""
    return PROBES[PeakMemory(device).probe]


@functools.cache
def _cpu_probe() -> str | None:
    """``hwm`` where /proc/self/clear_refs can reset the peak RSS (Linux), else ``sampled`` with psutil."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_kib("VmHWM")
        return "hwm"
    except (OSError, ValueError):
        pass
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    return "sampled"


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def _rss() -> int | None:
    try:
        return _proc_status_kib("VmRSS") * 1024
    except (OSError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def _trim_heap() -> None:
    """Give freed heap back to the system (glibc), so a block is not hidden by an earlier one's leftovers."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssSampler:
    def __init__(self, interval: float = 0.001) -> None:
        import threading

        import psutil

        self._process = psutil.Process()
        self._peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._done.wait(interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self._peak, self._process.memory_info().rss)
