"""Key-frame chains: N key frames -> N-1 interpolated segments joined into one sequence.

The model makes a fixed number of frames per segment (16: both keys and 14 in-betweens).
``inbetween_indices`` picks the requested number of in-betweens from them by nearest time -- no
blending, so our processing adds no cross-fade. Joins never repeat the shared key frame: segment i
contributes its first key and its in-betweens, and the last key closes the sequence (or, with
``loop``, a last segment returns to the first key, which is then not repeated at the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from toonctl.errors import OptionError
from toonctl.pipelines.interpolate import InterpolationPipeline


def inbetween_indices(num_generated: int, inbetweens: int | None) -> list[int]:
    """Indices of the in-between frames to keep from a segment of ``num_generated`` frames.

    The generated in-betweens sit at times 1..n-2 between the keys at 0 and n-1. Asking for ``k`` of
    them keeps the frames nearest to ``k`` evenly spaced times (e.g. 16 generated, 7 in-betweens ->
    2, 4, 6, 8, 9, 11, 13: animation on twos). ``None`` keeps them all.
    """
    available = num_generated - 2
    if inbetweens is None:
        return list(range(1, num_generated - 1))
    if not 0 <= inbetweens <= available:
        raise OptionError(f"inbetweens must be in 0..{available}, got {inbetweens}", option="inbetweens")
    span = num_generated - 1
    return [math.floor(j * span / (inbetweens + 1) + 0.5) for j in range(1, inbetweens + 1)]


@dataclass
class ChainSettings:
    """How to run and join the segments (model settings go to the pipeline as ``pipeline_kwargs``)."""

    inbetweens: int | None = None
    loop: bool = False
    exact_keys: bool = True
    release_encoders: bool = False  # one-shot runs: encode every segment first, then free the encoders


def interpolate_chain(
    pipe: InterpolationPipeline,
    keyframes: Sequence[torch.Tensor],
    prompt: str,
    settings: ChainSettings,
    *,
    generator: torch.Generator | None = None,
    on_segment: Callable[[int, int], None] | None = None,
    segment_kwargs: Callable[[int], dict] | None = None,
    **pipeline_kwargs,
) -> torch.Tensor:
    """Interpolate consecutive key frames and join the segments.

    Args:
        pipe: the loaded interpolation pipeline.
        keyframes: ``(3, H, W)`` tensors in [-1, 1], all the same size, at least two.
        prompt: the text prompt for every segment.
        settings: in-between count, loop, and whether key positions carry the input pixels.
        generator: one generator for the whole chain; segments draw from it in order.
        on_segment: called with ``(index, count)`` before each segment starts.
        segment_kwargs: ``index -> dict`` of extra ``pipe(...)`` arguments for one segment (e.g. its
            ``control`` stage).
        pipeline_kwargs: passed to ``pipe(...)`` (steps, guidance_scale, frame_stride, eta, callback, ...).

    Returns:
        ``(N, 3, H, W)`` frames in [-1, 1] (clamped).
    """
    if len(keyframes) < 2:
        raise ValueError("a chain needs at least two key frames")
    keys = list(keyframes) + ([keyframes[0]] if settings.loop else [])
    pairs = list(zip(keys[:-1], keys[1:], strict=True))
    frames: list[torch.Tensor] = []
    conditions = None
    if settings.release_encoders:  # the text/image towers (~1 B parameters) leave before the UNet runs
        conditions = [pipe.prepare_conditions(start, end, prompt) for start, end in pairs]
        pipe.release_encoders()
    for index, (start, end) in enumerate(pairs):
        if on_segment is not None:
            on_segment(index, len(pairs))
        extra = segment_kwargs(index) if segment_kwargs is not None else {}
        if conditions is not None:
            extra = {"conditions": conditions[index], **extra}
        video = pipe(start, end, prompt, generator=generator, **pipeline_kwargs, **extra).video[0]  # (3, T, H, W)
        video = video.clamp(-1, 1).transpose(0, 1).cpu()  # (T, 3, H, W)
        first_key = start.cpu() if settings.exact_keys else video[0]
        frames.append(first_key)
        frames.extend(video[i] for i in inbetween_indices(video.shape[0], settings.inbetweens))
        last_key = end.cpu() if settings.exact_keys else video[-1]
    if not settings.loop:
        frames.append(last_key)
    return torch.stack(frames)
