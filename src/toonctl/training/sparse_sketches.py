"""Which frames of a training clip get a sketch: the sparse pattern of ToonCrafter's sketch-encoder training.

The paper (§3.4) trains the frame-independent sketch encoder on sparse sketches: 80 % of the time a
*bisection* pattern -- for a segment ``(i, j)`` take frame ``floor((i + j) / 2)``, recursing from the
whole clip with a depth ``n ~ U[1, 4]`` -- and 20 % of the time a random subset of the frames. Frames
without a sketch get the empty sketch; with toonctl's sparse masks (``pipelines.sketch.SketchControl``)
they get no residual at all, which is what a training ``hint_mask`` of False means.

No code was released; the paper leaves open how frames are numbered and whether the key frames (the two
conditioning images) can be picked. The choices here:

* **0-indexed frames, recursion between the two key frames.** The recursion starts from the segment
  ``(0, T - 1)`` -- the first and the last key frame -- and a segment whose midpoint is one of its ends
  (``j - i < 2``) is not split. At T = 16 this gives, cumulatively over the depth::

      depth 1: {7}
      depth 2: {3, 7, 11}
      depth 3: {1, 3, 5, 7, 9, 11, 13}
      depth 4: {1, ..., 14}            (every in-between)

  which are the paper's sets ``{8}``, ``{4, 8, 12}``, ``{2, 4, ..., 14}`` written 1-indexed; at depth 4
  the 1-indexed recursion from ``(1, 16)`` would also pick frame 1 (the first key frame, the midpoint of
  ``(1, 2)`` under ``floor``) and never frame 16, an asymmetry of the rounding rather than a design, so
  this module takes the symmetric reading: the in-betweens.
* **Key frames excluded by default.** They are the conditioning images (``c_concat``, the CLIP image
  tokens); a sketch there tells the model nothing it does not already see, and at inference
  ``sketch-interp`` sketches are about the in-betweens. ``include_keyframes=True`` makes them eligible
  for the random subsets (bisection never picks them, by construction).
* **Random subsets.** A size ``k ~ U[1, K]`` over the ``K`` eligible frames, then ``k`` of them uniformly:
  every subset size equally likely, and never the empty set (a step without any sketch would train
  nothing).

Every draw comes from an injectable ``torch.Generator`` (the engine seeds one per step), in a fixed order:
per sample one uniform draw for the mixture, then the depth (``randint``) or the subset (``randint`` +
``randperm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BISECTION = "bisection"
RANDOM = "random"


@dataclass(frozen=True)
class SparsePattern:
    """The mixture of sketch patterns (the defaults are the paper's).

    Attributes:
        bisection_prob: probability of the bisection pattern (else a random subset).
        min_depth, max_depth: the bisection depth is uniform over ``min_depth..max_depth``.
        include_keyframes: let random subsets pick frames 0 and T-1 (see the module docstring).
    """

    bisection_prob: float = 0.8
    min_depth: int = 1
    max_depth: int = 4
    include_keyframes: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.bisection_prob <= 1.0:
            raise ValueError(f"bisection_prob must be in [0, 1], got {self.bisection_prob}")
        if not 1 <= self.min_depth <= self.max_depth:
            raise ValueError(f"need 1 <= min_depth <= max_depth, got {self.min_depth}..{self.max_depth}")


@dataclass(frozen=True)
class SketchSelection:
    """One draw: the frames that carry a sketch, and how they were chosen.

    Attributes:
        frames: sorted 0-indexed frames.
        kind: ``"bisection"`` or ``"random"``.
        depth: the bisection depth (None for a random subset).
    """

    frames: tuple[int, ...]
    kind: str
    depth: int | None = None


def bisection_frames(num_frames: int, depth: int) -> tuple[int, ...]:
    """The frames the bisection pattern picks up to ``depth`` (cumulative), 0-indexed, key frames excluded.

    ``bisection_frames(16, 2) == (3, 7, 11)``; see the module docstring for every depth at T = 16.
    """
    if num_frames < 2:
        raise ValueError(f"need at least 2 frames, got {num_frames}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    picked: set[int] = set()
    segments = [(0, num_frames - 1)]
    for _ in range(depth):
        next_segments = []
        for i, j in segments:
            if j - i < 2:  # the midpoint would be an end of the segment
                continue
            mid = (i + j) // 2
            picked.add(mid)
            next_segments += [(i, mid), (mid, j)]
        segments = next_segments
    return tuple(sorted(picked))


def eligible_frames(num_frames: int, include_keyframes: bool = False) -> list[int]:
    """The frames a random subset draws from."""
    return list(range(num_frames)) if include_keyframes else list(range(1, num_frames - 1))


def draw_sketch_frames(
    num_frames: int, generator: torch.Generator | None = None, pattern: SparsePattern | None = None
) -> SketchSelection:
    """Draw which frames of one ``num_frames``-frame clip get a sketch (see the module docstring).

    Raises:
        ValueError: fewer than 3 frames without ``include_keyframes`` (no frame to sketch).
    """
    pattern = pattern or SparsePattern()
    candidates = eligible_frames(num_frames, pattern.include_keyframes)
    if not candidates:
        raise ValueError(f"a {num_frames}-frame clip has no in-between to sketch")
    if torch.rand((), generator=generator).item() < pattern.bisection_prob:
        depth = int(torch.randint(pattern.min_depth, pattern.max_depth + 1, (), generator=generator))
        return SketchSelection(bisection_frames(num_frames, depth), BISECTION, depth)
    count = int(torch.randint(1, len(candidates) + 1, (), generator=generator))
    order = torch.randperm(len(candidates), generator=generator)[:count]
    return SketchSelection(tuple(sorted(candidates[i] for i in order.tolist())), RANDOM)


def draw_hint_mask(
    batch_size: int, num_frames: int, generator: torch.Generator | None = None, pattern: SparsePattern | None = None
) -> torch.Tensor:
    """``(B, T)`` bool: one independent ``draw_sketch_frames`` per sample, in batch order."""
    mask = torch.zeros(batch_size, num_frames, dtype=torch.bool)
    for b in range(batch_size):
        mask[b, list(draw_sketch_frames(num_frames, generator, pattern).frames)] = True
    return mask
