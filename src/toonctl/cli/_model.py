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


def load_pipeline(out: Output, model: tuple, device: str, dtype: str, decoder: str = "dualref"):
    """Load the interpolation pipeline of ``model`` (from ``find_model``) on ``device`` in ``dtype``, decoding
    with the stage named ``decoder`` (``toonctl.pipelines.decoders``)."""
    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.pipelines.decoders import parse_decoder
    from toonctl.pipelines.interpolate import InterpolationPipeline

    path, model_config = model
    try:
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
    except ValueError as exc:
        import typer

        raise typer.BadParameter(str(exc)) from None
    out.info(f"Loading {path} on {torch_device} ({str(torch_dtype).removeprefix('torch.')})")
    pipe = InterpolationPipeline.from_checkpoint(path, model_config, device=torch_device, dtype=torch_dtype)
    pipe.decoder = parse_decoder(decoder)
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
