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


def in_slices(fn, x: torch.Tensor, slices: int | None, dim: int = 0) -> torch.Tensor:
    """``fn(x)`` computed in ``slices`` pieces along ``dim``, for an ``fn`` whose output along ``dim`` depends
    only on the same positions of its input (images of a batch for 2-D layers; rows for a (3, 1, 1) conv).

    The output is allocated once and filled piece by piece, so only one piece's intermediates (norm outputs,
    convolution buffers and copies) are alive at once instead of the whole tensor's. The values are the same
    up to the kernels' arithmetic: the same bits where the kernel chosen for a piece is the one chosen for the
    whole (oneDNN and MKL pick kernels by shape and thread count), within float32 rounding elsewhere
    (``tests/models/test_decode_slicing.py``). Whole when ``slices`` is None or 1, and while autograd records
    (training keeps the one-call graph).

    Args:
        fn: a function of ``x``'s shape, position-wise along ``dim``.
        x: the input.
        slices: the number of pieces (fewer when ``dim`` is shorter).
        dim: the dimension cut.
    """
    length = x.shape[dim]
    if slices is None or slices <= 1 or length <= 1 or not can_overwrite():
        return fn(x)
    step = -(-length // min(slices, length))
    first = fn(x.narrow(dim, 0, step))
    layout = torch.channels_last if first.dim() == 4 and not first.is_contiguous() else torch.contiguous_format
    shape = list(first.shape)
    shape[dim] = length
    out = torch.empty(shape, dtype=first.dtype, device=first.device, memory_format=layout)
    out.narrow(dim, 0, step).copy_(first)
    del first
    for start in range(step, length, step):
        size = min(step, length - start)
        out.narrow(dim, start, size).copy_(fn(x.narrow(dim, start, size)))
    return out


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


def norm_act_conv_in_slices(
    norm: nn.GroupNorm, conv: nn.Module, x: torch.Tensor, slices: int, dim: int = 3
) -> torch.Tensor:
    """``conv(silu(norm(x)))`` over ``slices`` pieces of ``x`` along ``dim``, for a ``conv`` that is
    position-wise along ``dim`` (a (3, 1, 1) temporal conv along the rows); inference only.

    The group statistics must cover the whole tensor, so they are gathered first, piece by piece, in float64;
    each piece is then normalised with them, activated and convolved into one output tensor. The full-size
    normalised tensor never exists: the peak is ``x``, the output and one piece's temporaries, instead of
    three full tensors plus the conv's buffers. The values differ from the one-call path in the last bits
    (a different summation order for the statistics: within 1e-5 relative, see
    ``tests/models/test_decode_slicing.py``).

    Args:
        norm: the GroupNorm (statistics over channels-in-group and every other dimension but 0).
        conv: applied to each normalised, activated piece.
        x: ``(B, C, ...)``.
        slices: the number of pieces.
        dim: the dimension cut.
    """
    b, c = x.shape[:2]
    groups = norm.num_groups
    length = x.shape[dim]
    step = -(-length // max(1, min(slices, length)))
    # 1. group statistics over the whole tensor, in float64, piece by piece
    total = torch.zeros(b, groups, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for start in range(0, length, step):
        piece = x.narrow(dim, start, min(step, length - start)).to(torch.float64).reshape(b, groups, -1)
        total += piece.sum(-1)
        squares += piece.square().sum(-1)
        del piece
    count = x.numel() // (b * groups)
    mean = total / count
    rstd = (squares / count - mean.square()).clamp_min(0).add(norm.eps).rsqrt()
    # 2. per-channel scale and shift: y = x * scale + shift
    per_channel = c // groups
    scale = rstd.repeat_interleave(per_channel, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(per_channel, dim=1) * scale
    if norm.weight is not None:
        scale = scale * norm.weight.double()
        shift = shift * norm.weight.double() + norm.bias.double()
    view = (b, c) + (1,) * (x.dim() - 2)
    scale, shift = scale.float().view(view), shift.float().view(view)

    # 3. normalise, activate and convolve each piece
    def piece_forward(piece: torch.Tensor) -> torch.Tensor:
        normed = torch.addcmul(shift, piece.float(), scale).to(x.dtype)
        return conv(F.silu(normed, inplace=True))

    return in_slices(piece_forward, x, slices, dim=dim)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then Conv2d 3x3 padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, 2H, 2W)``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
