"""Will a run fit? A lower bound of its peak memory, estimated before loading anything, and the early refusal.

The two big terms are the weights and the VAE decode at full resolution: the decoder's top level holds
``vae.ch`` (128) channels per pixel for every frame it decodes at once, and a residual block keeps about
four such tensors alive (input, two activations, the norm's temporary). The UNet works on the 8x smaller
latent and is small beside that. The estimate is deliberately a lower bound (the real peak is higher), so
a run it refuses cannot fit; one it lets through may still fail, and then reports "out of memory".

* Weights: the checkpoint's size on disk, scaled to the run's dtype. On the CPU a memory-mapped checkpoint
  in the run's dtype costs no private memory (its pages are the reclaimable file cache); a conversion to
  another dtype does. On a GPU: every component (``offload none``), the largest one (``model``), none
  (``sequential``).
* Available: ``MemAvailable`` and the cgroup limit on the CPU, ``cudaMemGetInfo`` on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toonctl.errors import OutOfMemoryError

DECODE_TENSORS_ALIVE = 4  # tensors of the decoder's top level alive at once in a residual block (lower bound)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
UNET_SHARE = 0.56  # the UNet's share of the weights (1.44 of 2.56 billion parameters): offload "model"'s peak


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, all lower bounds: ``weights`` resident on the device, ``decode`` the VAE decode's activations."""

    weights: int
    decode: int

    @property
    def total(self) -> int:
        return self.weights + self.decode


def stored_weight_bytes(path: str | Path) -> tuple[int, int]:
    """``(bytes on disk, bytes per stored parameter)`` of a checkpoint file or converted folder."""
    path = Path(path)
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.iterdir() if p.suffix == ".safetensors")
        try:
            stored = json.loads((path / "config.json").read_text(encoding="utf-8")).get("dtype", "float16")
        except (OSError, ValueError):
            stored = "float16"
        return size, DTYPE_BYTES.get(str(stored).removeprefix("torch."), 2)
    return path.stat().st_size, 4  # official checkpoints are float32; a half-precision file is overestimated x2


def estimate_memory(
    weights_path: str | Path,
    vae_channels: int,
    frame_size: tuple[int, int],
    num_frames: int,
    *,
    device_type: str,
    dtype_bytes: int,
    offload: str = "none",
    decode_frames: int | None = None,
) -> MemoryEstimate:
    """Lower bound of the peak memory of one interpolation run on ``device_type`` (see the module docstring).

    Args:
        weights_path: the checkpoint file or converted folder.
        vae_channels: the VAE decoder's top-level channels (``config.vae.ch``).
        frame_size: ``(H, W)`` of the output frames.
        num_frames: frames per segment (16).
        dtype_bytes: bytes per element of the weights and the decode (4 for fp32, 2 for bf16/fp16).
        offload: ``none``, ``model`` or ``sequential``.
        decode_frames: frames decoded at once (a chunked decoder's chunk); default all.
    """
    on_disk, stored_bytes = stored_weight_bytes(weights_path)
    weights = on_disk * dtype_bytes // stored_bytes
    if device_type == "cpu":
        weights = 0 if dtype_bytes == stored_bytes else weights
    elif offload == "model":
        weights = int(weights * UNET_SHARE)
    elif offload == "sequential":
        weights = 0
    height, width = frame_size
    frames = min(num_frames, decode_frames or num_frames)
    decode = DECODE_TENSORS_ALIVE * frames * vae_channels * height * width * dtype_bytes
    return MemoryEstimate(weights=weights, decode=decode)


def available_memory(device) -> int | None:
    """Free bytes on ``device`` (a ``torch.device``) now, or None when it cannot be told."""
    if device.type == "cuda":
        import torch

        try:
            free, _total = torch.cuda.mem_get_info(device)
        except Exception:  # an unusable device: the load will say so
            return None
        return int(free)
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    limit = _cgroup_headroom()
    candidates = [v for v in (available, limit) if v is not None]
    return min(candidates) if candidates else None


def check_memory(estimate: MemoryEstimate, device, *, what: str) -> None:
    """Raise ``OutOfMemoryError`` when ``estimate`` cannot fit in what ``device`` has free now."""
    free = available_memory(device)
    if free is None or estimate.total <= free:
        return
    raise OutOfMemoryError(
        f"{what} needs at least {_gib(estimate.total)} of {device.type.upper()} memory"
        f" (weights {_gib(estimate.weights)}, decoding {_gib(estimate.decode)}); {_gib(free)} is free"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How much more this process's memory cgroup (v2 or v1) lets it use, or None when it has no limit.

    The limit minus what is charged to the cgroup, less its page cache: file pages (the memory-mapped weights
    among them) are reclaimed before the limit kills anything.
    """
    for folder, names in _cgroup_memory_folders(proc_cgroup, root):
        limit_name, usage_name, cache_keys = names
        try:
            limit_text = (folder / limit_name).read_text().strip()
            usage = int((folder / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        cache = 0
        try:
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines() if " " in line)
            cache = next((int(stat[k]) for k in cache_keys if k in stat), 0)
        except (OSError, ValueError):
            pass
        return int(limit_text) - max(usage - cache, 0)
    return None


V2_FILES = ("memory.max", "memory.current", ("file",))
V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_cache", "cache"))


def _cgroup_memory_folders(proc_cgroup: Path, root: Path) -> list[tuple[Path, tuple]]:
    """Candidate folders of this process's memory cgroup, most specific first, with their file names."""
    folders: list[tuple[Path, tuple]] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        path = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            folders.append((root / path, V2_FILES))
        elif "memory" in controllers.split(","):
            folders.append((root / "memory" / path, V1_FILES))
    # inside a container with its own cgroup namespace the process's cgroup is the mount's root
    folders += [(root, V2_FILES), (root / "memory", V1_FILES)]
    return folders
