"""One shot, from files to a file: read and fit the key frames, interpolate the chain, write the output.

``prepare_shot`` checks everything that can be checked without the model (inputs readable, sizes,
output path) so a command fails fast, before spending a minute loading weights. ``render_shot`` runs
the model and writes the output atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toonctl.models.configs import ToonCrafterConfig
from toonctl.presets import InterpolateSettings


@dataclass
class PreparedShot:
    """Key frames ready for the model: ``(3, H, W)`` tensors in [-1, 1] of one size."""

    keyframe_paths: list[Path]
    keyframes: list[torch.Tensor]
    size: tuple[int, int]
    output: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class RenderResult:
    output: Path
    frames: int
    size: tuple[int, int]
    fps: float
    segments: int
    seconds: float


@dataclass
class RenderHooks:
    """Progress callbacks: ``segment(index, count)`` and ``step(index, count)`` (denoising steps)."""

    segment: Callable[[int, int], None] | None = None
    step: Callable[[int, int], None] | None = None


def prepare_shot(
    keyframe_paths: Sequence[Path], output: Path, settings: InterpolateSettings, config: ToonCrafterConfig
) -> PreparedShot:
    """Read and fit the key frames and validate the output path (the model's config, not its weights)."""
    from toonctl.io.frames import choose_size, fit_image, read_image, to_tensor
    from toonctl.io.video import check_output
    from toonctl.pipelines.interpolate import latent_factor, native_size

    paths = [Path(p) for p in keyframe_paths]
    if len(paths) < 2:
        raise ValueError("give at least two key frames")
    check_output(output)
    images = [read_image(p) for p in paths]
    sizes = [(img.height, img.width) for img in images]
    size = choose_size(sizes, settings.size, multiple=latent_factor(config), native=native_size(config))
    notes = []
    if len(set(sizes)) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        notes.append(f"key frames differ in size ({listed}); all fitted to {size[0]}x{size[1]} by {settings.fit}")
    keyframes = [to_tensor(fit_image(img, size, settings.fit)) for img in images]
    return PreparedShot(keyframe_paths=paths, keyframes=keyframes, size=size, output=output, notes=notes)


def render_shot(
    pipe,
    shot: PreparedShot,
    settings: InterpolateSettings,
    hooks: RenderHooks | None = None,
    *,
    segment_kwargs: Callable[[int], dict] | None = None,
    release_encoders: bool = False,
) -> RenderResult:
    """Interpolate ``shot`` with ``pipe`` and write ``shot.output`` atomically.

    ``segment_kwargs``: optional per-segment extra pipeline arguments (see ``interpolate_chain``), e.g. the
    sketch control stage of each segment. ``release_encoders``: for one-shot runs, encode every segment
    first and free the text/image encoders before sampling (the pipeline cannot encode again after).
    """
    from toonctl.io.video import to_uint8, write_frames
    from toonctl.pipelines.chain import ChainSettings, interpolate_chain

    hooks = hooks or RenderHooks()
    started = time.monotonic()
    step_cb = None
    if hooks.step is not None:
        step_cb = lambda info: hooks.step(info["i"] + 1, settings.steps)  # noqa: E731
    frames = interpolate_chain(
        pipe,
        shot.keyframes,
        settings.prompt,
        ChainSettings(
            inbetweens=settings.inbetweens,
            loop=settings.loop,
            exact_keys=settings.exact_keys,
            release_encoders=release_encoders,
        ),  # fmt: skip,
        generator=torch.Generator().manual_seed(settings.seed),
        on_segment=hooks.segment,
        segment_kwargs=segment_kwargs,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        guidance_rescale=settings.guidance_rescale,
        eta=settings.eta,
        frame_stride=settings.frame_stride,
        callback=step_cb,
    )
    written = write_frames(to_uint8(frames), shot.output, fps=settings.fps, quality=settings.quality)
    segments = len(shot.keyframes) - 1 + int(settings.loop)
    return RenderResult(
        output=Path(written),
        frames=frames.shape[0],
        size=shot.size,
        fps=settings.fps,
        segments=segments,
        seconds=time.monotonic() - started,
    )
