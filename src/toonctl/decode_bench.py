"""The decode benchmark: quality, speed and memory of each decoder variant on a user's clips.

Every input (a video file or a folder of frames) is cut into clips of the model's frame count at one size
(``read_clips``). Each clip is encoded once (fp32, posterior mean; the references are its first and last
frame, as the key frames of an interpolation) and decoded by every selected variant
(``toonctl.pipelines.decoders``) in every selected dtype (``run_bench``). Per variant and clip: PSNR, SSIM and
LPIPS (when its weights are on disk) against the input frames, seconds per frame, peak memory, and the
difference from the full decoder's fp32 output. ``Bench`` holds the report (JSON, CSV, a Rich table).

Peak memory is measured around each decode alone (``toonctl.memory.PeakMemory``). On a GPU only the running
dtype's weights are on the card. ``peak`` is the whole process (weights included), ``work`` the rise over
what was in use just before the decode: the decode's own working memory. ``toonctl decode-bench`` is the
command.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toonctl.errors import OptionError
from toonctl.peak_memory import PeakMemory, memory_method

if TYPE_CHECKING:
    import torch

REFERENCE = "dualref"  # the differences are taken from this decoder's fp32 output
MIB = 1024 * 1024
TABLE_WIDTH = 160
COLUMNS = (  # result keys, in CSV order
    "input", "clip", "first_frame", "decoder", "dtype", "status", "psnr", "ssim", "lpips", "seconds_per_frame",
    "peak_mem_mib", "work_mem_mib", "max_diff_vs_full", "mean_diff_vs_full",
)  # fmt: skip


@dataclass
class Clip:
    """``frames``: ``(T, 3, H, W)`` float32 in [-1, 1], input frames ``start .. start+T-1`` of ``source``."""

    source: str
    index: int
    start: int
    frames: torch.Tensor


def read_clips(
    paths: list[Path], config, num_frames: int | None, size: str | None, fit: str, max_clips: int | None
) -> tuple[list[Clip], list[dict], tuple[int, int]]:
    """Read every input, check it holds at least one clip, fit the frames to one size and cut the clips.

    Returns:
        the clips, one ``{"path", "frames", "clips"}`` per input, and the clips' ``(H, W)``.

    Raises:
        InputImageError: an input is unreadable or shorter than one clip.
        OptionError: a bad ``size``.
    """
    import torch
    from PIL import Image

    from toonctl.errors import InputImageError
    from toonctl.io.frames import choose_size, fit_image, to_tensor
    from toonctl.io.video import read_frames
    from toonctl.pipelines.interpolate import latent_factor, native_size
    from toonctl.presets import parse_size

    length = num_frames or config.unet.temporal_length
    try:
        requested = parse_size(size) if size else None
    except ValueError as exc:
        raise OptionError(str(exc), option="size") from None
    videos = []
    for path in paths:
        frames, _ = read_frames(path)
        if frames.shape[0] < length:
            raise InputImageError(
                f"{path} has {frames.shape[0]} frame{'s' * (frames.shape[0] != 1)}; decode-bench needs at least "
                f"{length} (one clip of the model's frame count)",
                hint="give a longer video or frame folder, or a smaller --num-frames",
            )
        videos.append((path, frames))
    first = videos[0][1]
    hw = choose_size([first.shape[1:3]], requested, multiple=latent_factor(config), native=native_size(config))
    clips, sources = [], []
    for path, frames in videos:
        count = frames.shape[0] // length if max_clips is None else min(max_clips, frames.shape[0] // length)
        for i in range(count):
            pictures = frames[i * length : (i + 1) * length]
            tensors = [to_tensor(fit_image(Image.fromarray(p), hw, fit)) for p in pictures]
            clips.append(Clip(str(path), i, i * length, torch.stack(tensors)))
        sources.append({"path": str(path), "frames": int(frames.shape[0]), "clips": count})
    return clips, sources, hw


@dataclass
class Encoded:
    """One clip in the decoder's terms: model-space latents ``(1, 4, T, h, w)`` and references, on the CPU."""

    latents: torch.Tensor
    refs: list[torch.Tensor]


@dataclass
class Bench:
    header: dict[str, Any]
    results: list[dict[str, Any]]

    def summary(self) -> list[dict[str, Any]]:
        """One row per decoder and dtype: means over the clips (peak memory: the maximum)."""
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in self.results:
            groups.setdefault((row["decoder"], row["dtype"]), []).append(row)
        rows = []
        for (decoder, dtype), members in groups.items():
            ok = [r for r in members if r["status"] == "ok"]
            row: dict[str, Any] = {"decoder": decoder, "dtype": dtype, "clips": len(ok)}
            row["failed"] = len(members) - len(ok)
            for key in COLUMNS[6:]:
                values = [r[key] for r in ok if r[key] is not None]
                reduce = max if key.endswith("mem_mib") or key == "max_diff_vs_full" else _mean
                row[key] = reduce(values) if values else None
            rows.append(row)
        return rows

    def to_json(self) -> str:
        """The whole report; non-finite numbers (a PSNR of identical frames) become null."""
        data = {"report": self.header, "summary": self.summary(), "results": self.results}
        return json.dumps(_finite(data), indent=2, allow_nan=False)

    def to_csv(self) -> str:
        """The per-clip results plus the columns that make numbers comparable across machines."""
        extra = ("device", "device_name", "torch", "height", "width", "num_frames")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*COLUMNS, *extra])
        for row in self.results:
            values = [_csv_value(row[k]) for k in COLUMNS] + [self.header[k] for k in extra]
            writer.writerow(values)
        return buffer.getvalue()

    def table(self):
        from rich.table import Table

        h = self.header
        table = Table(
            title=f"decode-bench: {h['clips']} clip(s) of {h['num_frames']} frames at {h['height']}×{h['width']}",
            caption=(
                f"{h['device_name']} ({h['device']}) · torch {h['torch']} · toonctl {h['toonctl']}\n"
                f"memory: {h['memory']}\nΔ full: vs {h['reference']}, in 8-bit levels · LPIPS: {h['lpips']}"
            ),
        )
        headers = ("decoder", "dtype", "PSNR dB", "SSIM", "LPIPS", "s/frame", "peak MiB", "work MiB")
        for name in (*headers, "max Δ full", "mean Δ full"):
            table.add_column(name, justify="left" if name in ("decoder", "dtype") else "right")
        formats = ("{:.2f}", "{:.4f}", "{:.4f}", "{:.3f}", "{:.0f}", "{:.0f}", "{:.2f}", "{:.3f}")
        for row in self.summary():
            cells = [_fmt(row[k], f) for k, f in zip(COLUMNS[6:], formats, strict=True)]
            failed = f" [red]({row['failed']} failed)[/]" if row["failed"] else ""
            table.add_row(row["decoder"] + failed, row["dtype"], *cells)
        return table

    def write(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = self.to_json() + "\n"
        elif suffix == ".csv":
            text = self.to_csv()
        else:
            from rich.console import Console

            console = Console(file=io.StringIO(), width=TABLE_WIDTH, no_color=True, highlight=False)
            console.print(self.table())
            text = console.file.getvalue()
        from toonctl.io.atomic import write_text_atomic

        write_text_atomic(path, text)  # a temporary name, then a rename: never a truncated report


def parse_stages(decoders: str) -> list:
    """``"all"`` or comma-separated decoder names (``parse_decoder``) -> the stages, without repeats.

    Raises:
        OptionError: an unknown decoder (option ``decoders``).
    """
    from toonctl.pipelines.decoders import DECODERS, parse_decoder

    names = list(DECODERS) if decoders.strip() == "all" else [n for n in decoders.split(",") if n.strip()]
    try:
        return list({d.name: d for d in map(parse_decoder, names)}.values())
    except ValueError as exc:
        raise OptionError(str(exc), option="decoders") from None


def run_bench(
    model: tuple,
    clips: list[Clip],
    stages: list,
    dtypes: str,
    device: str,
    lpips_dir: Path | None,
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Bench:
    """Encode every clip, decode it with every stage in every dtype, and measure (see the module docstring).

    Args:
        model: ``(weights path, ToonCrafterConfig)`` (``resolve_weights``); only the VAE is loaded.
        clips: from ``read_clips``.
        stages: decoder stages (``parse_stages``).
        dtypes: comma-separated precisions (``auto``, ``fp32``, ``bf16``, ``fp16``).
        device: ``auto``, ``cpu``, ``cuda:N``.
        lpips_dir: the LPIPS weights' folder (None: ``$TOONCTL_LPIPS_DIR``); without them LPIPS is skipped.
        log: called with one line about what is loaded.
        progress: called with ``(done, total, label)`` after each encode and decode.

    Raises:
        OptionError: a bad ``device`` or ``dtypes``.
    """
    import torch

    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.metrics import LPIPS, find_lpips_weights
    from toonctl.weights import load_weights

    torch_device = _option("device", lambda: resolve_device(device))
    torch_dtypes = _option(
        "dtype", lambda: list(dict.fromkeys(resolve_dtype(d.strip(), torch_device) for d in dtypes.split(",")))
    )
    path, config = model
    if log is not None:
        log(f"Loading the VAE of {path} on {torch_device}")
    vae = load_weights(path, config, components=["vae"], device=torch_device, dtype=torch.float32)["vae"].eval()
    found = find_lpips_weights(lpips_dir)
    lpips = LPIPS.from_files(found.alexnet, found.linear).to(torch_device) if found.available else None
    header = _header(path, clips, stages, torch_device, torch_dtypes, lpips_status=found.reason or "AlexNet v0.1")
    results: list[dict[str, Any]] = []
    total = len(clips) * (1 + len(stages) * len(torch_dtypes))
    done = 0

    def advance(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    # 1. encode once, decode with the full fp32 decoder (the reference for the differences)
    encoded, references = _encode_clips(vae, clips, torch_device, advance)
    vae.to("cpu")  # on a GPU, only the measured dtype's weights stay on the card
    _release(torch_device)
    # 2. per dtype: the weights in that dtype, a warm-up on CUDA, then each clip by each stage
    for torch_dtype in torch_dtypes:
        on_cpu_fp32 = torch_device.type == "cpu" and torch_dtype == torch.float32
        model_d = vae if on_cpu_fp32 else copy.deepcopy(vae).to(torch_device, torch_dtype)
        if torch_device.type == "cuda":
            for stage in stages:  # first calls choose kernels: keep them out of the timings
                _measure(stage, model_d, encoded[0], clips[0], references[0], torch_device, None)
        for clip, enc, reference in zip(clips, encoded, references, strict=True):
            for stage in stages:
                row = _measure(stage, model_d, enc, clip, reference, torch_device, lpips)
                name = _dtype_name(torch_dtype)
                results.append(
                    {"input": clip.source, "clip": clip.index, "first_frame": clip.start,
                     "decoder": stage.name, "dtype": name, **row}
                )  # fmt: skip
                advance(f"{stage.name} {name}: {Path(clip.source).name} #{clip.index}")
        del model_d
        _release(torch_device)
    return Bench(header, results)


def _header(path, clips: list[Clip], stages: list, device, dtypes: list, lpips_status: str) -> dict[str, Any]:
    """What makes the numbers comparable: versions, hardware, sizes, the measuring methods."""
    import torch

    from toonctl import __version__

    height, width = clips[0].frames.shape[-2:]
    return {
        "toonctl": __version__, "torch": torch.__version__, "device": str(device),
        "device_name": device_name(device), "dtypes": [_dtype_name(d) for d in dtypes],
        "decoders": [s.name for s in stages], "weights": str(path), "height": height, "width": width,
        "num_frames": clips[0].frames.shape[0], "clips": len(clips), "memory": memory_method(device),
        "reference": f"{REFERENCE} fp32", "lpips": lpips_status,
        "latents": "posterior mean of every frame; references: the clip's first and last frame",
    }  # fmt: skip


def _encode_clips(vae, clips: list[Clip], device, advance) -> tuple[list[Encoded], list[torch.Tensor]]:
    """Each clip's latents and references, and its decode by the reference decoder ``(T, 3, H, W)`` on the CPU."""
    from toonctl.pipelines.decoders import DECODERS

    encoded, references = [], []
    for clip in clips:
        encoded.append(_encode(vae, clip.frames, device))
        video = DECODERS[REFERENCE](vae, *_on(encoded[-1], device))
        references.append(video[0].transpose(0, 1).cpu())
        advance(f"reference: {Path(clip.source).name} #{clip.index}")
    return encoded, references


def _measure(stage, vae, enc: Encoded, clip: Clip, reference, device, lpips) -> dict[str, Any]:
    import torch

    from toonctl.metrics import mean_finite, psnr, ssim, to_unit

    latents, refs = _on(enc, device)
    num_frames = latents.shape[2]
    empty = {k: None for k in COLUMNS[6:]}
    try:
        with PeakMemory(device) as memory:
            started = time.perf_counter()
            video = stage(vae, latents, refs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
    except (torch.cuda.OutOfMemoryError, MemoryError):
        del latents, refs
        _release(device)
        return {**empty, "status": "out of memory"}
    frames = video[0].transpose(0, 1)  # (T, 3, H, W) on the device
    decoded, target = to_unit(frames), to_unit(clip.frames.to(device))
    diff = (decoded - to_unit(reference.to(device))).abs() * 255
    row = {
        "status": "ok",
        "psnr": mean_finite(psnr(decoded, target).tolist()),
        "ssim": ssim(decoded, target).mean().item(),
        "lpips": None if lpips is None else lpips(frames.float(), clip.frames.to(device)).mean().item(),
        "seconds_per_frame": seconds / num_frames,
        "peak_mem_mib": None if memory.peak is None else memory.peak / MIB,
        "work_mem_mib": None if None in (memory.peak, memory.before) else (memory.peak - memory.before) / MIB,
        "max_diff_vs_full": diff.max().item(),
        "mean_diff_vs_full": diff.mean().item(),
    }
    return row


def _encode(vae, frames: torch.Tensor, device, batch: int = 4) -> Encoded:
    """Encode a clip a few frames at a time (the encoder is per image): latents of every frame, references of
    the first and the last."""
    import torch

    means, first, last = [], None, None
    with torch.no_grad():
        for start in range(0, frames.shape[0], batch):
            enc = vae.encode(frames[start : start + batch].to(device))
            means.append(enc.mean.float().cpu())
            if first is None:
                first = [h[:1].cpu() for h in enc.hidden_states]
            last = [h[-1:].cpu() for h in enc.hidden_states]
    latents = torch.cat(means).transpose(0, 1).unsqueeze(0) * vae.config.scale_factor  # (1, 4, T, h, w)
    # (1, C, 2, H, W): the first and the last frame's features on the frame axis
    refs = [torch.cat([a, b]).transpose(0, 1).unsqueeze(0) for a, b in zip(first, last, strict=True)]
    return Encoded(latents, refs)


def _option(option: str, resolve: Callable[[], Any]) -> Any:
    try:
        return resolve()
    except ValueError as exc:
        raise OptionError(str(exc), option=option) from None


def _on(enc: Encoded, device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return enc.latents.to(device), [r.to(device) for r in enc.refs]


def _release(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def _dtype_name(dtype) -> str:
    from toonctl.dtypes import short_name

    return short_name(dtype)


def _mean(values: list[float]) -> float:
    from toonctl.metrics import mean_finite

    return mean_finite(values)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "nan")
    return str(value)


def _fmt(value, spec: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return spec.format(value)
