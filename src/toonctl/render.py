"""One shot, from files to a file: read and fit the key frames, make the frames, write the output.

``prepare_shot`` checks everything that can be checked without the model (inputs readable, sizes,
output path) so a command fails fast, before spending a minute loading weights. ``render_shot`` is the one
shot runner of every command (``interpolate``, ``sketch-interp``, ``colorize``, ``batch``): it seeds the
generator, wires the progress hooks, runs a *frame producer* and writes the output atomically. A frame
producer is the task: ``ChainFrames`` (key frames to in-betweens, optionally steered by sketches) or
``ColorizeFrames`` (line art + coloured references).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from toonctl.errors import OptionError
from toonctl.models.configs import ToonCrafterConfig
from toonctl.presets import InterpolateSettings

if TYPE_CHECKING:
    from toonctl.pipelines.sketch import SketchGuidance


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
    """What a shot made. ``segments``: the model runs (chain segments, colorize passes)."""

    output: Path
    frames: int
    size: tuple[int, int]
    fps: float
    segments: int
    seconds: float


@dataclass
class RenderHooks:
    """Progress callbacks: ``segment(index, count)`` (model runs) and ``step(index, count)`` (denoising steps)."""

    segment: Callable[[int, int], None] | None = None
    step: Callable[[int, int], None] | None = None


@dataclass
class ShotRun:
    """What a frame producer gets besides the pipeline and the shot.

    Attributes:
        generator: the one source of random draws of the shot (seeded from the settings).
        on_segment: called with ``(index, count)`` before each model run.
        pipeline_kwargs: ``pipe(...)`` settings (steps, guidance, eta, frame stride, step callback).
    """

    generator: torch.Generator
    on_segment: Callable[[int, int], None] | None
    pipeline_kwargs: dict


class FrameProducer(Protocol):
    """A task: the pipeline + a prepared shot -> ``((N, 3, H, W)`` frames in [-1, 1], model runs made)."""

    def __call__(
        self, pipe, shot: PreparedShot, settings: InterpolateSettings, run: ShotRun
    ) -> tuple[torch.Tensor, int]: ...


def prepare_shot(
    keyframe_paths: Sequence[Path], output: Path, settings: InterpolateSettings, config: ToonCrafterConfig
) -> PreparedShot:
    """Read and fit the key frames and validate the output path (the model's config, not its weights)."""
    from toonctl.io.frames import choose_size, fit_image, read_image, to_tensor
    from toonctl.io.video import check_output
    from toonctl.pipelines.interpolate import latent_factor, native_size

    paths = [Path(p) for p in keyframe_paths]
    if len(paths) < 2:
        raise OptionError("give at least two key frames", option="keyframes")
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
    producer: FrameProducer | None = None,
    hooks: RenderHooks | None = None,
) -> RenderResult:
    """Make ``shot``'s frames with ``producer`` (default: ``ChainFrames()``) and write ``shot.output`` atomically."""
    from toonctl.io.video import to_uint8, write_frames

    producer = producer or ChainFrames()
    hooks = hooks or RenderHooks()
    started = time.monotonic()
    step_cb = None
    if hooks.step is not None:
        step_cb = lambda info: hooks.step(info["i"] + 1, settings.steps)  # noqa: E731
    run = ShotRun(
        generator=torch.Generator().manual_seed(settings.seed),
        on_segment=hooks.segment,
        pipeline_kwargs=dict(
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            guidance_rescale=settings.guidance_rescale,
            eta=settings.eta,
            frame_stride=settings.frame_stride,
            callback=step_cb,
        ),  # fmt: skip
    )
    frames, runs = producer(pipe, shot, settings, run)
    written = write_frames(to_uint8(frames), shot.output, fps=settings.fps, quality=settings.quality)
    return RenderResult(
        output=Path(written),
        frames=frames.shape[0],
        size=shot.size,
        fps=settings.fps,
        segments=runs,
        seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------------------------- producers


@dataclass(frozen=True)
class ChainFrames:
    """``interpolate``, ``sketch-interp`` and ``batch``: the chain of key frames, joined (``interpolate_chain``).

    Attributes:
        sketches: optional sketch guidance (``pipelines.sketch.SketchGuidance``; output frame indices), run by
            the pipeline's ``sketch_encoder`` control component.
        release_encoders: one-shot runs: encode every segment first and free the text/image encoders before
            sampling (the pipeline cannot encode again after).
    """

    sketches: SketchGuidance | None = None
    release_encoders: bool = False

    def __call__(self, pipe, shot: PreparedShot, settings: InterpolateSettings, run: ShotRun):
        from toonctl.pipelines.chain import interpolate_chain
        from toonctl.pipelines.sketch import sketch_interp

        chain = chain_settings(settings, release_encoders=self.release_encoders)
        common = dict(
            generator=run.generator, on_segment=run.on_segment, num_frames=settings.num_frames, **run.pipeline_kwargs
        )
        if self.sketches is None:
            frames = interpolate_chain(pipe, shot.keyframes, settings.prompt, chain, **common)
        else:
            frames = sketch_interp(
                pipe, control_component(pipe, "sketch_encoder"), shot.keyframes, self.sketches.hints, settings.prompt,
                chain, **self.sketches.options(), **common,
            )  # fmt: skip
        return frames, len(shot.keyframes) - 1 + int(settings.loop)


@dataclass(frozen=True)
class ColorizeFrames:
    """``colorize``: ``num_frames`` frames coloured from the shot's first ``references`` key frames.

    Attributes:
        num_frames: frames to make (one per sketch index up to the last).
        references: 1 or 2 (the shot's key frames hold the reference twice when there is one).
        sketches: the line art (``pipelines.sketch.SketchGuidance``; frame indices).
        window: most frames per model run (None: the model's).
    """

    num_frames: int
    references: int
    sketches: SketchGuidance
    window: int | None = None

    def __call__(self, pipe, shot: PreparedShot, settings: InterpolateSettings, run: ShotRun):
        from toonctl.pipelines.sketch import colorize, colorize_passes

        frames = colorize(
            pipe, control_component(pipe, "sketch_encoder"), shot.keyframes[: self.references], self.sketches.hints,
            self.num_frames, settings.prompt, window=self.window, on_pass=run.on_segment, generator=run.generator,
            **self.sketches.options(), **run.pipeline_kwargs,
        )  # fmt: skip
        window = self.window or pipe.config.unet.temporal_length
        return frames, len(colorize_passes(self.num_frames, window))


def control_component(pipe, name: str):
    """The pipeline's control network ``name``, with an error saying how to load it."""
    if name not in pipe.controls:
        raise OptionError(f"the pipeline was loaded without its {name}", option="controls",
                          hint=f"load it with LoadOptions(controls={{'{name}': None}})")  # fmt: skip
    return pipe.controls[name]


# --------------------------------------------------------------------------------------------- helpers


def chain_settings(settings: InterpolateSettings, *, release_encoders: bool = False):
    """The ``ChainSettings`` of a shot's settings."""
    from toonctl.pipelines.chain import ChainSettings

    return ChainSettings(
        inbetweens=settings.inbetweens, loop=settings.loop, exact_keys=settings.exact_keys,
        release_encoders=release_encoders,
    )  # fmt: skip


def chain_output_frames(num_keys: int, settings: InterpolateSettings, config: ToonCrafterConfig) -> int:
    """How many frames ``ChainFrames`` writes for ``num_keys`` key frames."""
    from toonctl.pipelines.sketch import chain_frame_map

    num_generated = settings.num_frames or config.unet.temporal_length
    return len(chain_frame_map(num_keys, num_generated, chain_settings(settings)))


def check_sketch_indices(paths: Mapping[int, object], count: int) -> None:
    """Refuse sketches for frames past an output of ``count`` frames (``OptionError``, option ``sketches``)."""
    beyond = sorted(i for i in paths if i >= count)
    if beyond:
        raise OptionError(
            f"sketches for frames {frame_ranges(beyond)}, but the output has {count} frames (0..{count - 1})",
            option="sketches",
        )


def shot_sketches(
    sketch_dir: Path, shot: PreparedShot, settings: InterpolateSettings, config: ToonCrafterConfig
) -> SketchGuidance:
    """The sketch guidance of a ``batch`` shot whose folder has a ``sketches/`` subfolder: the ``sketch-interp``
    defaults (sparse, scale 0.6, polarity detected, the text context)."""
    from toonctl.io.sketches import list_sketches, load_sketches
    from toonctl.pipelines.sketch import SketchGuidance

    paths = list_sketches(sketch_dir)
    check_sketch_indices(paths, chain_output_frames(len(shot.keyframes), settings, config))
    return SketchGuidance(load_sketches(paths, shot.size, settings.fit, "auto").hints)


def frame_ranges(indices: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts, run = [], [indices[0]]
    for i in indices[1:]:
        if i == run[-1] + 1:
            run.append(i)
        else:
            parts.append(run)
            run = [i]
    parts.append(run)
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)
