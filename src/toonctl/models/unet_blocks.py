"""Building blocks of the ToonCrafter 3-D UNet: residual, temporal-conv, transformer and resampling blocks.

Reimplements ``ResBlock``, ``TemporalConvBlock``, ``Downsample`` and ``Upsample`` of
``lvdm/modules/networks/openaimodel3d.py``, ``GroupNormSpecific`` of ``lvdm/basics.py`` and
``CrossAttention``, ``BasicTransformerBlock``, ``FeedForward``/``GEGLU``, ``SpatialTransformer`` and
``TemporalTransformer`` of ``lvdm/modules/attention.py`` (ToonCrafter b0c47ff), restricted to the
options ToonCrafter uses (no relative position, no causal mask, no scale-shift norm).

Layouts: 2-D blocks take frames folded into the batch, ``(B*T, C, H, W)``; temporal blocks take
``(B, C, T, H, W)`` so their GroupNorm statistics span all frames. Submodule names and ``nn.Sequential``
indices are the checkpoint's (including the misspelt ``temopral_conv``). Nothing here touches parameter
values in ``__init__`` (the official zero-initialisations only matter for training), so every block
builds on the meta device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toonctl.models import fold_frames, unfold_frames
from toonctl.models.attention import attention, merge_heads, split_heads
from toonctl.models.layers import FP32GroupNorm, InplaceSiLU, add_reusing, can_overwrite, same_layout


class TemporalConvBlock(nn.Module):
    """Four ``GroupNorm(32) -> SiLU -> Conv3d((3,1,1))`` stages over time, plus the identity.

    The GroupNorms see the 5-D tensor, so their statistics span all frames. Stages 2-4 carry a
    dropout slot at index 2 (checkpoint indices ``conv1.2`` but ``conv{2,3,4}.3``).
    """

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.GroupNorm(32, channels), InplaceSiLU(), _time_conv(channels))
        self.conv2 = nn.Sequential(
            nn.GroupNorm(32, channels), InplaceSiLU(), nn.Dropout(dropout), _time_conv(channels)
        )
        self.conv3 = nn.Sequential(
            nn.GroupNorm(32, channels), InplaceSiLU(), nn.Dropout(dropout), _time_conv(channels)
        )
        self.conv4 = nn.Sequential(
            nn.GroupNorm(32, channels), InplaceSiLU(), nn.Dropout(dropout), _time_conv(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, C, T, H, W)``."""
        branch = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return add_reusing(x, branch, reuse=branch)


def _time_conv(channels: int) -> nn.Conv3d:
    # Kernel 3 over time only, zero-padded at the first and last frame.
    return nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))


class ResBlock(nn.Module):
    """Residual block with an additive timestep embedding, followed by a ``TemporalConvBlock``.

    ``h = skip(x) + out_layers(in_layers(x) + emb_layers(emb))``, then ``h = temopral_conv(h)`` over the
    unfolded frames.
    """

    def __init__(
        self,
        in_channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        *,
        temporal_conv: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_layers = nn.Sequential(
            FP32GroupNorm(32, in_channels), InplaceSiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            FP32GroupNorm(32, out_channels),
            InplaceSiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == in_channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(in_channels, out_channels, 1)
        # Misspelt as in the checkpoint.
        self.temopral_conv = TemporalConvBlock(out_channels, dropout=dropout) if temporal_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Residual update of ``x`` conditioned on ``emb``, then the temporal convolution.

        Args:
            x: ``(B*T, C_in, H, W)``.
            emb: ``(B, E)`` (shared by the frames of a sample) or ``(B*T, E)``.
            num_frames: T.

        Returns:
            ``(B*T, C_out, H, W)``.
        """
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)  # (B, C_out) or (B*T, C_out)
        if emb_out.shape[0] != h.shape[0]:
            emb_out = emb_out.repeat_interleave(num_frames, dim=0)  # (B*T, C_out), batch-major
        h = self.out_layers(add_reusing(h, emb_out[:, :, None, None], reuse=h))
        h = add_reusing(self.skip_connection(x), h, reuse=h)
        if self.temopral_conv is not None:
            h = fold_frames(self.temopral_conv(unfold_frames(h, num_frames)))
        return h


class Downsample(nn.Module):
    """Conv2d 3x3, stride 2, padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))``."""
        return self.op(x)


class Attention(nn.Module):
    """Multi-head attention; with a context, optionally split into text and image tokens.

    Self-attention when ``context`` is None. With ``image_cross_attention`` the context's first
    ``text_context_len`` tokens go through ``to_k``/``to_v`` and the rest through ``to_k_ip``/``to_v_ip``;
    both softmax attentions share the queries and are summed (image scale fixed at 1.0, ToonCrafter has no
    learnable ``alpha``) before ``to_out``. Without it, a context is cut to its text tokens.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        *,
        image_cross_attention: bool = False,
        text_context_len: int = 77,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        kv_dim = context_dim or query_dim
        self.heads = heads
        self.text_context_len = text_context_len
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(kv_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(kv_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(0.0))
        self.to_k_ip: nn.Linear | None = None
        self.to_v_ip: nn.Linear | None = None
        if image_cross_attention:
            self.to_k_ip = nn.Linear(kv_dim, inner_dim, bias=False)
            self.to_v_ip = nn.Linear(kv_dim, inner_dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``x`` to itself (``context`` None) or to ``context``.

        Args:
            x: ``(N, Nq, query_dim)``.
            context: ``(N, L, context_dim)`` or None (self-attention).

        Returns:
            ``(N, Nq, query_dim)``.
        """
        q = split_heads(self.to_q(x), self.heads)  # (N, heads, Nq, D)
        image = None
        if context is None:
            text = x
        else:
            text = context[:, : self.text_context_len]
            if self.to_k_ip is not None:
                image = context[:, self.text_context_len :]
        out = attention(q, split_heads(self.to_k(text), self.heads), split_heads(self.to_v(text), self.heads))
        # No image tokens means nothing to attend to (a softmax over an empty set); skip the branch.
        if image is not None and image.shape[1] > 0:
            k_ip = split_heads(self.to_k_ip(image), self.heads)
            v_ip = split_heads(self.to_v_ip(image), self.heads)
            out = add_reusing(out, attention(q, k_ip, v_ip), reuse=out)
        return self.to_out(merge_heads(out))


class GEGLU(nn.Module):
    """``Linear(dim, 2*inner)``; first half is the value, second half the gate: ``value * gelu(gate)``."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        gelu = F.gelu(gate)  # exact (erf) GELU
        if can_overwrite() and same_layout(gelu, value):
            return gelu.mul_(value)  # value * gelu, in gelu's buffer
        return value * gelu


class FeedForward(nn.Module):
    """GEGLU feed-forward with a 4x hidden width (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, attention to the context (or to itself), GEGLU feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        *,
        image_cross_attention: bool = False,
        text_context_len: int = 77,
    ) -> None:
        super().__init__()
        # Registration order follows the checkpoint: attn1, ff, attn2, norm1..3.
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(
            dim,
            heads,
            dim_head,
            context_dim,
            image_cross_attention=image_cross_attention,
            text_context_len=text_context_len,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, L, dim) -> (N, L, dim)``; ``context`` None makes attn2 a second self-attention."""
        a = self.attn1(self.norm1(x))
        x = add_reusing(x, a, reuse=a)
        a = self.attn2(self.norm2(x), context)
        x = add_reusing(x, a, reuse=a)
        a = self.ff(self.norm3(x))
        return add_reusing(x, a, reuse=a)


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the H*W tokens of each frame, attending to that frame's context.

    ``GroupNorm(32, eps 1e-6) -> Linear proj_in -> blocks -> Linear proj_out``, plus the input.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        context_dim: int,
        *,
        depth: int = 1,
        image_cross_attention: bool = True,
        text_context_len: int = 77,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner_dim,
                heads,
                dim_head,
                context_dim,
                image_cross_attention=image_cross_attention,
                text_context_len=text_context_len,
            )
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner_dim, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Transform every frame's H*W tokens.

        Args:
            x: ``(B*T, C, H, W)``.
            context: ``(B*T, L, context_dim)``, one row per frame.

        Returns:
            ``(B*T, C, H, W)``.
        """
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B*T, H*W, C)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = self.proj_out(tokens)  # (B*T, H*W, C)
        out = tokens.transpose(1, 2).reshape(n, c, h, w)
        return add_reusing(out, x, reuse=out)


class TemporalTransformer(nn.Module):
    """Transformer over the T frames of each pixel: both attentions are self-attention over time.

    ``GroupNorm(32, eps 1e-6)`` over the 5-D tensor (statistics across frames), tokens ``(B*H*W, T, C)``,
    no positional encoding and no mask. ``conv_proj`` gives ``proj_in``/``proj_out`` the checkpoint
    shape of a ``Conv1d(kernel 1)`` (``init_attn``); they are applied as the equivalent linear map.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, *, depth: int = 1, conv_proj: bool = False) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        if conv_proj:
            self.proj_in: nn.Module = TokenConv1d(channels, inner_dim)
        else:
            self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, heads, dim_head) for _ in range(depth)
        )
        if conv_proj:
            self.proj_out: nn.Module = TokenConv1d(inner_dim, channels)
        else:
            self.proj_out = nn.Linear(inner_dim, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, C, T, H, W)``."""
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # (B*H*W, T, C)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)  # (B*H*W, T, C)
        return tokens.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2) + x


class TokenConv1d(nn.Conv1d):
    """A kernel-1 ``Conv1d`` (the checkpoint's shape for ``init_attn``'s projections) applied to tokens
    ``(N, L, C_in) -> (N, L, C_out)`` as the linear map it is."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(tokens, self.weight.squeeze(-1), self.bias)
