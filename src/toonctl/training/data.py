"""Training clips as tensors: 16-frame windows with a random frame stride, fitted to the training size.

Reimplements DynamiCrafter's ``lvdm/data/webvid.py::WebVid.__getitem__`` (c453369, l.89-167), the loader of the
official interpolation training, on top of ``toonctl.io.clips`` (clips from folders, videos and manifests):

* the frame stride is drawn uniformly from ``[stride_min, stride_max]`` (official: ``randint(1, 6)``);
* when the clip is too short for that stride, the largest stride that fits is used instead: ``(n - 1) //
  (T - 1)``. The official code uses ``n // 16``, which is sometimes one less than what fits (n = 46: 2, not 3);
* the window start is uniform in ``[0, n - ((T - 1) * stride + 1)]``; frames ``start + stride * i``;
* the frame-rate condition is ``fps = source fps // stride`` (a float floor, as officially); a folder of frames
  has no frame rate of its own and uses ``default_fps`` (``--default-fps``, 24 by default: animation's rate);
* each frame is fitted to the training size with ``toonctl.io.frames.fit_image`` (``--fit`` means what it means
  at inference: ``crop`` covers and cuts the centre, ``pad`` fits inside on white, ``resize`` squashes). The
  official ``Resize(320) + CenterCrop(320, 512)`` zero-pads narrow sources; ``pad`` on white matches what
  inference does with the same drawings instead;
* values ``(x / 255 - 0.5) * 2`` in [-1, 1];
* a clip that cannot be read, or is shorter than T frames, is skipped (the next clip is taken, as officially);
  each sample reports the clips it skipped so the engine can warn and count them in the main process.

Every random choice comes from a seed derived from (run seed, position of the sample in the stream), so a
run is reproducible, independent of the DataLoader workers, and resumable at any step (``StreamSampler``).
"""

from __future__ import annotations

import hashlib
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from toonctl.errors import DataError
from toonctl.io.clips import ClipRecord, clip_fps, clip_frame_count, discover_clips, read_clip_frames

DEFAULT_FPS = 24  # a folder of frames has no frame rate: assume animation's 24 fps
DEFAULT_STRIDE = (1, 6)  # the official random_fs range (frame_stride_min 1, frame_stride 6)


@dataclass(frozen=True)
class DataSettings:
    """How clips become training samples.

    Attributes:
        size: (H, W) of every frame.
        num_frames: frames per sample (T; the model's 16).
        stride: (min, max) frame stride, both inclusive.
        fit: ``crop``, ``pad`` or ``resize`` (see ``toonctl.io.frames.fit_image``).
        default_fps: the frame rate of clips that have none (folders of frames).
        sketch_folders: also read each frame's sketch from the clip's ``sketches/`` folder (``"hints"``, for
            the sketch-encoder objective; ``toonctl.training.sketch_sources.read_folder_sketches``).
    """

    size: tuple[int, int] = (320, 512)
    num_frames: int = 16
    stride: tuple[int, int] = DEFAULT_STRIDE
    fit: str = "crop"
    default_fps: float = DEFAULT_FPS
    sketch_folders: bool = False

    def __post_init__(self) -> None:
        low, high = self.stride
        if not 1 <= low <= high:
            raise ValueError(f"stride range must satisfy 1 <= min <= max, got {low}:{high}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.default_fps <= 0:
            raise ValueError(f"default_fps must be > 0, got {self.default_fps}")


def parse_stride(text: str) -> tuple[int, int]:
    """``"1:6"`` -> ``(1, 6)``; ``"4"`` -> ``(4, 4)``."""
    parts = text.replace(" ", "").split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1 or values[0] > values[-1]:
        raise ValueError(f"stride must look like MIN:MAX with 1 <= MIN <= MAX (e.g. 1:6) or one number, got {text!r}")
    return values[0], values[-1]


# --------------------------------------------------------------------------------------------- choices


def sample_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the sample at ``position`` of the run's stream (stable across Python runs)."""
    digest = hashlib.blake2b(f"toonctl-train/{seed}/{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def fitting_stride(num_source_frames: int, num_frames: int, stride: int) -> int:
    """``stride``, or the largest stride that fits ``num_frames`` frames into the clip (0: too short)."""
    if num_source_frames < num_frames:
        return 0
    return min(stride, (num_source_frames - 1) // (num_frames - 1))


@dataclass(frozen=True)
class Window:
    """The frames a sample takes from its clip: ``start + stride * i``, i < T."""

    start: int
    stride: int
    num_frames: int

    @property
    def indices(self) -> list[int]:
        return [self.start + self.stride * i for i in range(self.num_frames)]


def choose_window(num_source_frames: int, settings: DataSettings, rng: np.random.Generator) -> Window | None:
    """The stride (uniform in the range, then shrunk to fit) and start (uniform); None if the clip is too short."""
    wanted = int(rng.integers(settings.stride[0], settings.stride[1] + 1))
    stride = fitting_stride(num_source_frames, settings.num_frames, wanted)
    if stride == 0:
        return None
    span = (settings.num_frames - 1) * stride + 1
    start = int(rng.integers(0, num_source_frames - span + 1))
    return Window(start, stride, settings.num_frames)


def frame_rate_condition(source_fps: float | None, stride: int, default_fps: float) -> int:
    """``fs`` = source fps // stride (at least 1)."""
    fps = default_fps if not source_fps else source_fps
    return max(1, int(math.floor(fps / stride)))


def frames_to_tensor(frames: np.ndarray, settings: DataSettings) -> torch.Tensor:
    """``(T, h, w, 3)`` uint8 -> ``(3, T, H, W)`` float32 in [-1, 1], each frame fitted to ``settings.size``."""
    from PIL import Image

    from toonctl.io.frames import fit_image

    fitted = np.stack([np.asarray(fit_image(Image.fromarray(f), settings.size, settings.fit)) for f in frames])
    pixels = torch.from_numpy(fitted).permute(3, 0, 1, 2).float()  # (3, T, H, W)
    return pixels.div(255).sub(0.5).mul(2)


# --------------------------------------------------------------------------------------------- dataset


SampleHook = Callable[[dict, np.random.Generator], dict]
"""Called in the DataLoader worker on each sample with the sample's own generator; returns the sample, e.g.
with ``"hints"`` ``(1, T, H, W)`` in [0, 1] and ``"hint_mask"`` ``(T,)`` bool added (the sketch objective).
It must be picklable (a module-level function or an object) when ``num_workers > 0``."""


@dataclass(frozen=True)
class SampleKey:
    """What the sampler asks of the dataset: clip ``index`` with the random choices of ``seed``."""

    index: int
    seed: int


class ClipDataset(Dataset):
    """Clips -> samples ``{"video": (3, T, H, W) in [-1, 1], "caption", "fps", "frame_stride", "path",
    "skipped"}``; ``skipped`` lists ``(path, reason)`` of the clips passed over to reach this one.

    Index it with a ``SampleKey`` (from ``StreamSampler``) or a plain int (seed 0).
    """

    def __init__(
        self, records: Sequence[ClipRecord], settings: DataSettings, sample_hook: SampleHook | None = None
    ) -> None:
        if not records:
            raise DataError("the dataset has no clips", hint="give folders of clips, video files or a manifest")
        self.records = list(records)
        self.settings = settings
        self.sample_hook = sample_hook

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0)
        rng = np.random.default_rng(key.seed)
        skipped: list[tuple[str, str]] = []
        for offset in range(len(self.records)):
            record = self.records[(key.index + offset) % len(self.records)]
            try:
                sample = self.read(record, rng)
            except DataError as exc:
                skipped.append((str(record.path), str(exc)))
                continue
            sample["skipped"] = skipped
            return sample
        raise DataError(
            f"none of the {len(self.records)} clips could be used (first: {skipped[0][1]})",
            hint=f"clips need at least {self.settings.num_frames} readable frames",
        )

    def read(self, record: ClipRecord, rng: np.random.Generator) -> dict:
        """One sample of ``record`` with the choices of ``rng``. Raises DataError if unusable."""
        count = clip_frame_count(record)
        window = choose_window(count, self.settings, rng)
        if window is None:
            raise DataError(f"{record.path}: {count} frames, fewer than the {self.settings.num_frames} needed")
        frames = read_clip_frames(record, window.indices)
        sample = {
            "video": frames_to_tensor(frames, self.settings),
            "caption": record.caption,
            "fps": frame_rate_condition(clip_fps(record), window.stride, self.settings.default_fps),
            "frame_stride": window.stride,
            "path": str(record.path),
        }
        if self.settings.sketch_folders:
            from toonctl.training.sketch_sources import read_folder_sketches

            source_frames = [record.start + i for i in window.indices]
            sample["hints"] = read_folder_sketches(record.path, source_frames, self.settings.size, self.settings.fit)
        return sample if self.sample_hook is None else self.sample_hook(sample, rng)


def collate(samples: list[dict]):
    """Samples -> ``(TrainingBatch, skipped)``: the batch and the ``(path, reason)`` of clips passed over.

    ``hints`` ``(1, T, H, W)`` and ``hint_mask`` ``(T,)`` (added by a ``SampleHook``) are stacked when present.
    """
    from toonctl.training.objective import TrainingBatch

    extras = {name: torch.stack([s[name] for s in samples]) for name in ("hints", "hint_mask") if name in samples[0]}
    batch = TrainingBatch(
        video=torch.stack([s["video"] for s in samples]),
        prompts=[s["caption"] for s in samples],
        fs=torch.tensor([s["fps"] for s in samples], dtype=torch.long),
        **extras,
    )
    skipped = [item for s in samples for item in s.get("skipped", [])]
    return batch, skipped


# --------------------------------------------------------------------------------------------- order


@dataclass
class StreamSampler(Sampler):
    """An endless, reproducible stream of batches of ``SampleKey``, sharded over processes.

    The stream concatenates one random permutation of the clips per epoch (seeded by (seed, epoch)). Global
    batch ``k`` is positions ``[k * B * P, (k + 1) * B * P)`` of the stream; process ``p`` takes its
    ``[p * B, (p + 1) * B)`` slice. The same ``B * P`` thus gives the same global batches whatever the process
    count, and ``start_batch`` resumes the stream exactly (each sample's choices depend only on its position).
    """

    num_clips: int
    batch_size: int
    seed: int = 0
    num_processes: int = 1
    process_index: int = 0
    start_batch: int = 0
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batch = self.start_batch
        while True:
            yield self.batch(batch)
            batch += 1

    def batch(self, k: int) -> list[SampleKey]:
        """This process's keys of global batch ``k``."""
        first = (k * self.num_processes + self.process_index) * self.batch_size
        return [self.key(position) for position in range(first, first + self.batch_size)]

    def key(self, position: int) -> SampleKey:
        epoch, offset = divmod(position, self.num_clips)
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)}
        return SampleKey(int(self._orders[epoch][offset]), sample_seed(self.seed, position))


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which saves a checkpoint before stopping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: ClipDataset, sampler: StreamSampler, *, num_workers: int = 0) -> DataLoader:
    """A DataLoader decoding in ``num_workers`` worker processes (0: in the main process), yielding
    ``(TrainingBatch, skipped)``."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=_ignore_sigint if num_workers else None,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )


def build_dataset(
    inputs: Sequence[str | Path], settings: DataSettings, sample_hook: SampleHook | None = None
) -> ClipDataset:
    """The dataset of every clip under ``inputs`` (see ``toonctl.io.clips.discover_clips``).

    Raises:
        DataError: a missing input, an unreadable manifest, or no clips at all (before any model loads).
    """
    records = discover_clips(inputs)
    if not records:
        shown = ", ".join(str(p) for p in inputs)
        raise DataError(
            f"no clips found in {shown}",
            hint="give video files (.mp4, .webm, .gif, ...), folders of frames, or a .csv/.jsonl manifest",
        )
    return ClipDataset(records, settings, sample_hook)
