"""Loading the model for a command, and driving the progress display from the render hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from toonctl.cli._output import Output


def find_model(weights: Path | None, config: Path | None):
    """``(weights path, ToonCrafterConfig)``: cheap, so inputs can be checked before loading the model."""
    from toonctl.weights import resolve_weights

    return resolve_weights(weights, config)


def load_pipeline(
    out: Output,
    model: tuple,
    device: str,
    dtype: str,
    decoder: str = "dualref",
    *,
    offload: str = "none",
    device_map: str | None = None,
    attention: str = "auto",
    compile_unet: bool = False,
    frame_size: tuple[int, int] | None = None,
):
    """Load the interpolation pipeline of ``model`` (from ``find_model``).

    ``device``/``dtype`` (``autocast``: fp32 weights under fp16 autocast), the decoder stage named
    ``decoder`` (``toonctl.pipelines.decoders``), ``offload`` / ``device_map`` placement
    (``toonctl.pipelines.placement``), the attention backend and an optional ``torch.compile`` of the UNet.
    ``frame_size`` (H, W): refuse before loading when the run cannot fit in memory (``toonctl.memory``).
    """
    import torch

    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.models.attention import set_attention_backend
    from toonctl.pipelines.decoders import parse_decoder
    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.pipelines.placement import OFFLOAD_MODES, parse_device_map

    path, model_config = model
    try:
        torch_device = resolve_device(device)
        autocast = dtype == "autocast"
        torch_dtype = torch.float32 if autocast else resolve_dtype(dtype, torch_device)
        attention_note = set_attention_backend(attention)
        placement_map = parse_device_map(device_map)
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    except ValueError as exc:
        import typer

        raise typer.BadParameter(str(exc)) from None
    if attention_note:
        out.warn(attention_note)
    if frame_size is not None and not placement_map:
        from toonctl.memory import check_memory, estimate_memory

        estimate = estimate_memory(
            path, model_config.vae.ch, frame_size, model_config.unet.temporal_length, device_type=torch_device.type,
            dtype_bytes=torch_dtype.itemsize, offload=offload,
            decode_frames=getattr(parse_decoder(decoder), "chunk", None),
        )  # fmt: skip
        check_memory(estimate, torch_device, what=f"a {frame_size[0]}x{frame_size[1]} (HxW) run")
    precision = "fp32 weights, fp16 autocast" if autocast else str(torch_dtype).removeprefix("torch.")
    out.info(f"Loading {path} on {torch_device} ({precision}{'' if offload == 'none' else ', offload ' + offload})")
    pipe = InterpolationPipeline.from_checkpoint(
        path, model_config, device=torch_device, dtype=torch_dtype, offload=offload, device_map=placement_map
    )
    if autocast:
        pipe.autocast_dtype = torch.float16
    pipe.decoder = parse_decoder(decoder)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    return pipe


@contextlib.contextmanager
def render_progress(out: Output, label: str, steps: int) -> Iterator[object]:
    """``RenderHooks`` that move a Rich progress display (segments, denoising steps, decode)."""
    from toonctl.render import RenderHooks

    with out.progress() as progress:
        if progress is None:
            yield RenderHooks()
            return
        segments = progress.add_task(f"{label}: segments", total=None)
        denoise = progress.add_task("  denoising", total=steps)

        def on_segment(index: int, count: int) -> None:
            progress.update(segments, total=count, completed=index)
            progress.reset(denoise, total=steps, description="  denoising")

        def on_step(index: int, count: int) -> None:
            progress.update(denoise, completed=index)
            if index == count:  # the VAE decode follows the last step
                progress.update(denoise, description="  decoding")

        yield RenderHooks(segment=on_segment, step=on_step)
