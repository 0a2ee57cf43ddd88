"""Sinusoidal timestep embedding and the MLP that follows it.

Reimplements ``timestep_embedding`` of ``lvdm/models/utils_diffusion.py`` and the ``time_embed`` /
``fps_embedding`` stacks of ``lvdm/modules/networks/openaimodel3d.py::UNetModel`` (ToonCrafter b0c47ff).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer (or fractional) timesteps, ``[cos, sin]`` halves in that order.

    Always returned in float32: the arguments reach ``t * freq`` ~ 1e3 rad, where half precision keeps
    no fractional part, so the caller casts the *result* to the network's dtype.

    Args:
        timesteps: ``(N,)`` timesteps (the DDPM index 0..999, or the frame-stride integer).
        dim: embedding width; an odd ``dim`` gets one trailing zero.
        max_period: the lowest frequency is ``1 / max_period``.

    Returns:
        ``(N, dim)`` float32.
    """
    half = dim // 2
    # Same rounding order as the official table, (j * -ln(max_period)) / half in float32, so on the CPU
    # the result is bit-identical. The official code builds the table on the CPU and copies it over; we
    # build it on the timesteps' device instead: a blocking host-to-device copy on every UNet call would
    # stall the launch queue, and an accelerator's exp differs by at most an ulp, below the rounding of
    # ``t * freq`` itself.
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * -math.log(max_period) / half
    freqs = torch.exp(exponent)
    args = timesteps.float()[:, None] * freqs[None]  # (N, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        embedding = torch.cat([embedding, embedding.new_zeros(embedding.shape[0], 1)], dim=-1)
    return embedding


class EmbeddingMLP(nn.Sequential):
    """``Linear(in, out) -> SiLU -> Linear(out, out)``: ``time_embed`` and ``fps_embedding``.

    Indices 0 and 2 hold the weights, as in the checkpoint (``time_embed.0.weight`` ...).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(nn.Linear(in_features, out_features), nn.SiLU(), nn.Linear(out_features, out_features))
