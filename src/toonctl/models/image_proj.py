"""The image-context projector: a Perceiver Resampler turning CLIP ViT tokens into per-frame image tokens.

Reimplements ``lvdm/modules/encoders/resampler.py::Resampler`` (with ``video_length`` set, the frame-wise
variant) of the official ToonCrafter repository. ``num_queries * video_length`` learned latents attend to
the projected ViT tokens through ``depth`` layers of Perceiver attention + feed-forward; latent
``16 * i + j`` is query ``j`` of frame ``i``, which is how the UNet splits them per frame.

Module names follow the checkpoint (``image_proj_model.`` stripped): ``layers.{i}.0`` is the attention,
``layers.{i}.1`` the feed-forward ``Sequential`` (``0`` LayerNorm, ``1`` Linear, ``2`` GELU, ``3`` Linear).
"""

from __future__ import annotations

import torch
from torch import nn

from toonctl.models.attention import attention, merge_heads, split_heads
from toonctl.models.configs import ResamplerConfig
from toonctl.models.layers import normal_parameter


class PerceiverAttention(nn.Module):
    """Latents attend to ``[image tokens ; latents]``; queries come from the latents only."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)  # image tokens
        self.norm2 = nn.LayerNorm(dim)  # latents
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One attention update of the latents.

        Args:
            x: image tokens ``(B, N, dim)``.
            latents: ``(B, L, dim)``.

        Returns:
            the attention update for the latents, ``(B, L, dim)`` (the caller adds the residual).
        """
        x, latents = self.norm1(x), self.norm2(latents)
        q = self.to_q(latents)  # (B, L, inner)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # (B, N + L, inner) each
        # The official code multiplies q and k by dim_head**-0.25 each before the product (for fp16 range);
        # that is the default scale dim_head**-0.5 applied once.
        out = attention(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads))
        return self.to_out(merge_heads(out))


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear ``dim -> mult*dim``, exact GELU, Linear back; no biases."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class Resampler(nn.Module):
    """``(B, N, embedding_dim)`` ViT tokens -> ``(B, num_queries * video_length, output_dim)`` image context."""

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        num_latents = config.num_queries * config.video_length
        self.latents = normal_parameter(1, num_latents, config.dim, std=config.dim**-0.5)
        self.proj_in = nn.Linear(config.embedding_dim, config.dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(config.dim, config.dim_head, config.heads),
                    feed_forward(config.dim, config.ff_mult),
                ]
            )
            for _ in range(config.depth)
        )
        self.proj_out = nn.Linear(config.dim, config.output_dim)
        self.norm_out = nn.LayerNorm(config.output_dim)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Image context tokens for the UNet.

        Args:
            image_tokens: ``(B, N, embedding_dim)``, e.g. the 257 tokens of ``OpenCLIPVisionEncoder``.

        Returns:
            ``(B, num_queries * video_length, output_dim)``, frame-major.
        """
        x = self.proj_in(image_tokens.to(self.proj_in.weight.dtype))  # (B, N, dim)
        latents = self.latents.expand(x.shape[0], -1, -1)  # (B, L, dim)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents)
            latents = latents + ff(latents)
        return self.norm_out(self.proj_out(latents))
