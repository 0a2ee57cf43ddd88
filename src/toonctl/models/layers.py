"""Layers shared by the models.

``FP32GroupNorm`` is ``lvdm.basics.GroupNormSpecific``; ``Upsample`` is ``openaimodel3d.Upsample``
(``dims=2``), which the official dual-reference decoder also uses.

``can_overwrite``, ``InplaceSiLU`` and ``add_reusing`` let inference reuse the buffers of intermediates nobody
else reads (a norm's output, a residual branch's output) instead of allocating a new one per op. The values
are bit for bit those of the out-of-place ops (the same kernels; ``a + b`` and ``b + a`` round alike); only the
allocations go. While autograd records, everything stays out of place.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def normal_parameter(*shape: int, std: float) -> nn.Parameter:
    """A parameter drawn from N(0, std^2), as ``nn.init.normal_`` would.

    Checkpoints are loaded into modules built on the meta device, where ``nn.init.normal_`` (and
    out-of-place arithmetic) goes through torch's Python decompositions and imports torch._dynamo:
    two seconds on every load. ``randn`` and an in-place scale do not; ``torch.normal(mean, std, size)``
    would ignore the meta device altogether.
    """
    return nn.Parameter(torch.randn(*shape).mul_(std))


def can_overwrite() -> bool:
    """True when intermediates may be overwritten in place: no autograd graph is being recorded."""
    return not torch.is_grad_enabled()


def same_layout(fresh: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether ``fresh`` can hold ``fresh (op) other``: same dtype as the result, and the layout the
    out-of-place op would give (same strides, or ``other`` broadcast into it). A different memory format would
    steer later convolutions to other kernels, and the bits would change."""
    if fresh.dtype != torch.result_type(fresh, other):
        return False
    if fresh.shape == other.shape and fresh.stride() == other.stride():
        return True
    if fresh.shape != torch.broadcast_shapes(fresh.shape, other.shape) or fresh.stride() != _row_major(fresh.shape):
        return False
    # fresh row-major (to the strides of its size-1 dims, which decide what channels-last checks see) and an
    # other whose strides fall in row-major order (a strided or broadcast view): the out-of-place result is
    # row-major too.
    strides = [st for size, st in zip(other.shape, other.stride(), strict=True) if size > 1]
    return all(a >= b for a, b in pairwise(strides))


def _row_major(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def add_reusing(a: torch.Tensor, b: torch.Tensor, *, reuse: torch.Tensor) -> torch.Tensor:
    """``a + b``, written into ``reuse`` (``a`` or ``b``: a tensor only the caller holds) when
    ``can_overwrite()`` and ``same_layout``. Otherwise ``a + b`` in that order: with operands of different
    layouts the order decides the result's layout, which the later kernels see."""
    other = b if reuse is a else a
    if can_overwrite() and same_layout(reuse, other):
        return reuse.add_(other)
    return a + b


class InplaceSiLU(nn.SiLU):
    """``nn.SiLU`` that overwrites its input when ``can_overwrite()``: for inputs nothing else reads (the
    output of the norm before it in a ``Sequential``). Parameter-free, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=can_overwrite())


def silu_(fresh: torch.Tensor) -> torch.Tensor:
    """``F.silu``, in place on ``fresh`` (a tensor only the caller holds) when ``can_overwrite()``."""
    return F.silu(fresh, inplace=can_overwrite())


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype.

    The official model runs under fp16 autocast, where group_norm computes in fp32; and the norms over
    5-D ``(B, C, T, H, W)`` inputs pool statistics over every frame of a clip (millions of elements per
    group), where half-precision sums would lose the variance. Same constructor as ``nn.GroupNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then Conv2d 3x3 padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, 2H, 2W)``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
