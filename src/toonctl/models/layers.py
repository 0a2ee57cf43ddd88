"""Layers shared by the models.

``FP32GroupNorm`` is ``lvdm.basics.GroupNormSpecific``; ``Upsample`` is ``openaimodel3d.Upsample``
(``dims=2``), which the official dual-reference decoder also uses.
"""

from __future__ import annotations

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
