"""Weights that live in a memory-mapped checkpoint: find them, map them in ahead of use, from a thread.

``from_checkpoint`` leaves every weight in the checkpoint file's mapping (``torch.load(mmap=True)``), so a
run starts at once and the first forward of each component pages its weights in, fault by fault, on the
critical path. ``prefetch`` asks the kernel to map those pages ahead of time (``MADV_POPULATE_READ``, Linux
5.14+; older kernels get ``MADV_WILLNEED``, which starts the reads without mapping) from a background
thread, while the encoders run. The pages are the file's page cache: nothing is copied, no second copy of
the weights is held, and a prefetch that loses the race to the model costs nothing but the syscall.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import functools
import mmap
import sys
import threading
from collections.abc import Iterable

from torch import nn

MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_POPULATE_READ = 22
POPULATE_CHUNK = 64 * 2**20  # one madvise call per 64 MiB: the thread stays interruptible between calls


def file_mappings(maps_text: str | None = None) -> list[tuple[int, int]]:
    """Sorted ``(start, end)`` address ranges of this process's file-backed mappings (``/proc/self/maps``)."""
    if maps_text is None:
        try:
            with open("/proc/self/maps", encoding="utf-8") as f:
                maps_text = f.read()
        except OSError:
            return []
    ranges = []
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[4] == "0" or fields[5].startswith("["):
            continue  # anonymous memory, the heap, the stack, vdso...
        start, end = (int(x, 16) for x in fields[0].split("-"))
        ranges.append((start, end))
    return sorted(ranges)


def _tensor_spans(modules: Iterable[nn.Module], maps: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Merged ``(start, end)`` byte ranges of the modules' CPU tensors that lie in file mappings."""
    maps = file_mappings() if maps is None else maps
    starts = [s for s, _ in maps]
    spans = []
    seen: set[int] = set()
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type != "cpu" or tensor.numel() == 0:
                continue
            storage = tensor.untyped_storage()
            begin = storage.data_ptr()
            if begin in seen:
                continue
            seen.add(begin)
            i = bisect.bisect_right(starts, begin) - 1
            if i < 0 or begin >= maps[i][1]:
                continue
            spans.append((begin, min(begin + storage.nbytes(), maps[i][1])))
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return merged


def mapped_ranges(modules: Iterable[nn.Module], maps: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Page-aligned, merged ``(start, end)`` ranges of the modules' tensors that lie in file mappings.

    Tensors in private memory (converted dtypes, merged LoRAs, anything on a GPU) are left out.
    """
    page = mmap.PAGESIZE
    return _merge([(b // page * page, -(-e // page) * page) for b, e in _tensor_spans(modules, maps)])


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def populate(ranges: Iterable[tuple[int, int]], stop: threading.Event | None = None) -> int:
    """Map the pages of ``ranges`` into this process now; returns the bytes advised.

    ``MADV_POPULATE_READ`` where the kernel has it, else ``MADV_WILLNEED`` (read-ahead only). Stops early when
    ``stop`` is set. Never raises: a range the kernel refuses is skipped.
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    advice = MADV_POPULATE_READ
    done = 0
    for begin, end in ranges:
        for at in range(begin, end, POPULATE_CHUNK):
            if stop is not None and stop.is_set():
                return done
            length = min(POPULATE_CHUNK, end - at)
            if madvise(at, length, advice) != 0:
                if advice == MADV_POPULATE_READ and ctypes.get_errno() == errno.EINVAL:
                    advice = MADV_WILLNEED  # kernel before 5.14
                    madvise(at, length, advice)
                else:
                    continue
            done += length
    return done


def release(modules: Iterable[nn.Module]) -> int:
    """Unmap the pages of ``modules``' file-backed weights from this process; returns the bytes released.

    For components the caller has dropped and will not run again (the encoders once every segment is
    encoded): their pages stop counting towards this process's memory at once, instead of staying mapped
    until the whole checkpoint mapping goes. Only pages lying wholly inside these modules' tensors are
    released (a page shared with a tensor of another component stays), and the pages remain in the page
    cache for the next process. Reading such a weight afterwards would map the file's page again, so it is
    meant for weights nothing reads any more.
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    page = mmap.PAGESIZE
    done = 0
    for begin, end in _tensor_spans(modules):
        inner_begin, inner_end = -(-begin // page) * page, end // page * page
        if inner_end > inner_begin and madvise(inner_begin, inner_end - inner_begin, MADV_DONTNEED) == 0:
            done += inner_end - inner_begin
    return done


class Prefetch:
    """A background thread mapping the given modules' file-backed weights in, in the order given.

    ``Prefetch([unet, vae]).start()`` before the encoders run; ``join()`` is optional (a prefetch still
    running when the model gets there only means the model faults the rest itself); ``cancel()`` stops it
    between 64 MiB chunks.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        maps = file_mappings()  # read once for all the modules
        self.ranges = [r for module in modules for r in mapped_ranges([module], maps)]
        self.bytes_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toonctl-prefetch", daemon=True)

    @property
    def total_bytes(self) -> int:
        return sum(end - begin for begin, end in self.ranges)

    def _run(self) -> None:
        self.bytes_done = populate(self.ranges, self._stop)

    def start(self) -> Prefetch:
        if self.ranges:
            self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def cancel(self) -> None:
        self._stop.set()
        self.join()
