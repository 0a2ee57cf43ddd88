"""Loading the model for a command, and driving the progress display from the render hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from toonctl.cli._output import Output
from toonctl.presets import LoadOptions


def find_model(options: LoadOptions):
    """``(weights path, ToonCrafterConfig)``: cheap, so inputs can be checked before loading the model."""
    from toonctl.weights import resolve_weights

    return resolve_weights(options.weights, options.config)


def load_pipeline(out: Output, options: LoadOptions, model: tuple, *, frame_size: tuple[int, int] | None = None):
    """The interpolation pipeline of ``model`` (from ``find_model``) loaded as ``options`` say; bad option
    values are usage errors (exit 2), reported before anything is loaded. ``frame_size`` (H, W): refuse a run
    that cannot fit in memory before loading (``pipelines.loading.check_fits``)."""
    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.pipelines.loading import check_fits, plan_load

    plan = plan_load(options, *model)
    for note in plan.notes:
        out.warn(note)
    if frame_size is not None:
        check_fits(plan, frame_size)
    out.info(plan.describe())
    return InterpolationPipeline.from_checkpoint(*model, options=options)


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
