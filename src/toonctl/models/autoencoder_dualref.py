"""ToonCrafter's autoencoder: a 2-D KL-f8 encoder and the dual-reference video decoder.

Reimplements, from the official ToonCrafter repository (Doubiiu/ToonCrafter):

* ``lvdm/models/autoencoder.py`` (``AutoencoderKL_Dualref``: ``encode`` and the kwargs ``decode`` path,
  which never applies ``post_quant_conv``);
* ``lvdm/modules/networks/ae_modules.py`` (``Encoder`` with ``return_hidden_states=True``);
* ``lvdm/models/autoencoder_dualref.py`` (``VideoDecoder`` in its ``conv-only`` time mode: ``VideoResBlock``,
  ``Combiner``, ``MemoryEfficientCrossAttentionWrapperFusion``, ``AE3DConv``), with the ``ResBlock`` of its
  ``time_stack`` and the ``Upsample`` of ``lvdm/modules/networks/openaimodel3d.py``;
* ``lvdm/distributions.py`` (the diagonal Gaussian posterior).

Module names follow the official tree, so the state dict is the checkpoint's ``first_stage_model.*`` with the
prefix stripped, minus ``post_quant_conv.*`` (allocated officially, never used on the decode path).

Every GroupNorm here computes in fp32 and casts back (``FP32GroupNorm``): the official model runs under CUDA
autocast, which keeps ``group_norm`` in fp32, and its ``time_stack`` norms upcast explicitly. Those 5-D norms
pool statistics over every frame (up to ~10M elements per group at 512x320), where fp16/bf16 accumulation
loses the variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from toonctl.models import fold_frames, unfold_frames
from toonctl.models.attention import attention, merge_heads, split_heads
from toonctl.models.configs import AutoencoderConfig
from toonctl.models.layers import (
    FP32GroupNorm,
    InplaceSiLU,
    Upsample,
    add_reusing,
    can_overwrite,
    in_slices,
    norm_act_conv_in_slices,
    same_layout,
    silu_,
)

NORM_GROUPS = 32
SPATIAL_NORM_EPS = 1e-6  # ae_modules.Normalize: every 2-D VAE norm and the fusion-attention norm
TEMPORAL_NORM_EPS = 1e-5  # lvdm.basics.normalization (GroupNormSpecific): the time_stack norms

RefFrames = tuple[int | None, int | None]  # the frames that receive reference 0 and reference 1


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def spatial_norm(channels: int) -> FP32GroupNorm:
    return FP32GroupNorm(NORM_GROUPS, channels, eps=SPATIAL_NORM_EPS)


def temporal_norm(channels: int) -> FP32GroupNorm:
    return FP32GroupNorm(NORM_GROUPS, channels, eps=TEMPORAL_NORM_EPS)


class ResnetBlock(nn.Module):
    """Pre-norm 2-D residual block without a time embedding (``ae_modules.ResnetBlock``, ``temb_channels=0``).

    ``x + conv2(silu(norm2(conv1(silu(norm1(x))))))``, with a 1x1 ``nin_shortcut`` when the width changes.
    Dropout is 0 in every ToonCrafter config and is left out.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = spatial_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = spatial_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) -> (N, C_out, H, W)``."""
        h = self.conv1(silu_(self.norm1(x)))
        h = silu_(self.norm2(h))  # rebound first: conv1's output is freed before conv2 runs
        h = self.conv2(h)
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return add_reusing(skip, h, reuse=h)


class TemporalResBlock(nn.Module):
    """The ``time_stack`` of a ``VideoResBlock``: a 3-D ResBlock with (3, 1, 1) kernels and no embedding.

    ``in_layers``/``out_layers`` keep the official ``nn.Sequential`` indices (norm 0, conv 2 / conv 3). The
    official block adds a zero "time embedding" between them; adding zeros changes nothing and is skipped.
    """

    def __init__(self, channels: int, kernel_size: tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.in_layers = nn.Sequential(
            temporal_norm(channels), InplaceSiLU(), nn.Conv3d(channels, channels, kernel_size, padding=padding)
        )
        self.out_layers = nn.Sequential(
            temporal_norm(channels),
            InplaceSiLU(),
            nn.Identity(),  # index 2 is Dropout(0) officially; kept so the conv stays at index 3
            nn.Conv3d(channels, channels, kernel_size, padding=padding),
        )
        # Zero-initialised before training, as officially: an untrained block is the identity.
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)

    def forward(self, x: torch.Tensor, *, slices: int | None = None) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, C, T, H, W)``; the norms see all T frames at once.

        ``slices``: run norm, activation and (3, 1, 1) conv in this many pieces of rows, the statistics
        gathered over the whole clip first (``norm_act_conv_in_slices``): a lower peak, the same values up to
        float32 rounding."""
        norm1, act1, conv1 = self.in_layers
        norm2, act2, _, conv2 = self.out_layers  # index 2: the Identity standing for Dropout(0)
        if slices is not None and slices > 1 and can_overwrite():
            # piece by piece along the rows, the norms' statistics gathered over the whole clip first
            h = norm_act_conv_in_slices(norm1, conv1, x, slices)
            h = norm_act_conv_in_slices(norm2, conv2, h, slices)
            return add_reusing(x, h, reuse=h)
        # Each name is rebound as soon as its tensor is consumed: a conv's input is the only other full-clip
        # tensor alive while it runs (besides x).
        h = conv1(act1(norm1(x)))
        h = act2(norm2(h))
        h = conv2(h)
        return add_reusing(x, h, reuse=h)


class VideoResBlock(ResnetBlock):
    """A 2-D ``ResnetBlock`` followed by a temporal branch, blended by ``sigmoid(mix_factor)``.

    ``out = a * time_stack(x_s) + (1 - a) * x_s`` with ``x_s`` the 2-D block's output and ``a`` the sigmoid of
    the learned scalar ``mix_factor`` (``merge_strategy='learned'``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        self.time_stack = TemporalResBlock(out_channels)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(
        self, x: torch.Tensor, num_frames: int, *, temporal: bool = True, slices: int | None = None
    ) -> torch.Tensor:
        """``(B*T, C_in, H, W) -> (B*T, C_out, H, W)``; ``temporal=False`` returns the spatial path alone.

        ``slices``: run the spatial block in this many pieces of frames and the temporal one in pieces of
        rows (``in_slices``): a lower peak, the same values up to float32 rounding."""
        x_s = self.spatial(x, slices=slices)
        return self.mix(x_s, num_frames, slices=slices) if temporal else x_s

    def spatial(self, x: torch.Tensor, *, slices: int | None = None) -> torch.Tensor:
        """Step 1, the 2-D residual block frame by frame: ``(B*T, C_in, H, W) -> (B*T, C_out, H, W)``."""
        return in_slices(super().forward, x, slices)

    def mix(self, x_s: torch.Tensor, num_frames: int, *, slices: int | None = None) -> torch.Tensor:
        """Steps 2-3, the temporal branch over the whole clip and the learned blend: ``(B*T, C, H, W)`` in and
        out. A caller that no longer needs the block's input runs ``spatial`` then ``mix`` and drops it."""
        x_s = unfold_frames(x_s, num_frames)  # (B, C_out, T, H, W)
        # 2. temporal branch over the whole clip
        x_t = self.time_stack(x_s, slices=slices)
        # 3. learned blend
        alpha = torch.sigmoid(self.mix_factor)
        if can_overwrite() and same_layout(x_t, x_s) and x_t.dtype == alpha.dtype and x_t.data_ptr() != x_s.data_ptr():
            # the same products and sum, written into x_t's buffer; element-wise, so piece by piece (rows) is
            # exact and keeps the (1 - a) * x_s temporary to one piece
            height = x_t.shape[-2]
            step = -(-height // max(1, min(slices or 1, height)))
            for start in range(0, height, step):
                rows = slice(start, start + step)
                x_t[..., rows, :].mul_(alpha).add_((1.0 - alpha) * x_s[..., rows, :])
            return fold_frames(x_t)
        return fold_frames(alpha * x_t + (1.0 - alpha) * x_s)  # (B*T, C_out, H, W)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the ``h*w`` positions of each image, with 1x1-conv projections.

    ``AttnBlock`` (encoder) and ``MemoryEfficientAttnBlock`` (decoder) officially: the same math, scale
    ``C ** -0.5``, residual output.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = spatial_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``."""
        n, c, h, w = x.shape
        x_n = self.norm(x)
        # (N, C, H, W) -> (N, 1, H*W, C): one head of width C
        q, k, v = (proj(x_n).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        out = attention(q, k, v)  # (N, 1, H*W, C)
        out = out.squeeze(1).transpose(1, 2).reshape(n, c, h, w)
        out = self.proj_out(out)
        return add_reusing(x, out, reuse=out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding of one pixel on the right and bottom only (``ae_modules``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, H/2, W/2)``."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Combiner(nn.Module):
    """Adds 1x1-conv projections of the two reference maps to the clip's first and last frame only.

    Reference 0 goes to frame 0 and reference 1 to frame T-1 (both to the same frame when T = 1); the
    frames in between pass through unchanged. ``ref_frames`` moves or drops the two targets, for a chunk cut
    out of a longer clip.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        # Zero-initialised before training, as officially: an untrained Combiner ignores the references.
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(
        self, x: torch.Tensor, ref: torch.Tensor, num_frames: int, *, ref_frames: RefFrames = (0, -1)
    ) -> torch.Tensor:
        """Add the projected references to frames 0 and T-1.

        Args:
            x: ``(B*T, C, H, W)`` decoder features.
            ref: ``(B, C, 2, H, W)`` encoder features of the first and last key frame.
            num_frames: T.
            ref_frames: the frames receiving reference 0 and reference 1; None skips that reference.

        Returns:
            ``(B*T, C, H, W)``.
        """
        if ref_frames == (None, None):
            return x
        ref = unfold_frames(self.conv(fold_frames(ref)), 2)  # (B, C, 2, H, W)
        # In place, as officially, when no graph is recorded: x is the caller's fresh intermediate.
        out = unfold_frames(x if can_overwrite() else x.clone(), num_frames)  # (B, C, T, H, W)
        for index, frame in enumerate(ref_frames):
            if frame is not None:
                out[:, :, frame] += ref[:, :, index]
        return fold_frames(out)


class FusionCrossAttention(nn.Module):
    """Every frame attends to the tokens of both reference maps (``MemoryEfficientCrossAttentionWrapperFusion``).

    Queries are the frame's normalised ``h*w`` positions; keys and values are the *un-normalised* tokens of
    reference 0 followed by those of reference 1 (``2*h*w`` tokens). ``heads x dim_head`` is fixed by the
    config (8 x 64), whatever the channel count. The output projection is added to the input.
    """

    def __init__(self, channels: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = spatial_norm(channels)
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(channels, inner, bias=False)
        self.to_v = nn.Linear(channels, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, channels))  # index 0, as the official to_out.0
        # Zero-initialised before training, as officially: an untrained block is the identity.
        nn.init.zeros_(self.to_out[0].weight)
        nn.init.zeros_(self.to_out[0].bias)

    def forward(
        self, x: torch.Tensor, ref: torch.Tensor, num_frames: int, *, ref_frames: RefFrames = (0, -1)
    ) -> torch.Tensor:
        """Cross-attend every frame to both references and add the result.

        Args:
            x: ``(B*T, C, H, W)`` decoder features.
            ref: ``(B, C, 2, H, W)`` encoder features of the first and last key frame.
            num_frames: T.
            ref_frames: unused (every frame attends to both references); the ``Combiner`` signature.

        Returns:
            ``(B*T, C, H, W)``.
        """
        bt, c, h, w = x.shape
        b = bt // num_frames
        # 1. queries: (B*T, C, H, W) -> (B*T, H*W, inner) -> (B, T*H*W, inner)
        q = self.to_q(self.norm(x).flatten(2).transpose(1, 2)).reshape(b, num_frames * h * w, -1)
        # 2. keys/values: (B, C, 2, H, W) -> (B*2, H*W, C) -> (B*2, H*W, inner) -> (B, 2*H*W, inner)
        ref_tokens = fold_frames(ref).flatten(2).transpose(1, 2)
        k = self.to_k(ref_tokens).reshape(b, 2 * h * w, -1)
        v = self.to_v(ref_tokens).reshape(b, 2 * h * w, -1)
        # 3. attention. All frames of a clip share the same keys, so their queries form one sequence: the
        #    per-query softmax is unchanged and K/V are not copied per frame.
        out = attention(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads))
        out = merge_heads(out).reshape(bt, h * w, -1)  # (B*T, H*W, inner)
        # 4. project back and add: (B*T, H*W, C) -> (B*T, C, H, W)
        out = self.to_out(out).transpose(1, 2).reshape(bt, c, h, w)
        return add_reusing(x, out, reuse=out)


class TimeMixConv(nn.Conv2d):
    """``AE3DConv``: a 2-D 3x3 conv per frame, then a (3, 1, 1) ``time_mix_conv`` over the clip (no residual)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        padding = tuple(k // 2 for k in kernel_size)
        self.time_mix_conv = nn.Conv3d(out_channels, out_channels, kernel_size, padding=padding)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, num_frames: int, *, temporal: bool = True, slices: int | None = None
    ) -> torch.Tensor:
        """``(B*T, C_in, H, W) -> (B, C_out, T, H, W)``; ``temporal=False`` skips the ``time_mix_conv``."""
        h = unfold_frames(in_slices(super().forward, x, slices), num_frames)  # (B, C_out, T, H, W)
        return self.time_mix_conv(h) if temporal else h


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------


class DownLevel(nn.Module):
    """One encoder resolution: ``block`` (ResnetBlocks), then an optional ``downsample``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, downsample: bool) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[i], widths[i + 1]) for i in range(num_blocks))
        self.downsample = Downsample(out_channels) if downsample else None


class MidBlock(nn.Module):
    """The encoder's bottleneck: ResnetBlock, single-head self-attention, ResnetBlock."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = SpatialSelfAttention(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w) -> (N, C, h, w)``."""
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """The SD KL-f8 image encoder (``ae_modules.Encoder``), returning the decoder's reference features too."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        num_levels = len(widths)
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        self.down = nn.ModuleList(
            DownLevel(
                config.ch if i == 0 else widths[i - 1], widths[i], config.num_res_blocks, downsample=i < num_levels - 1
            )
            for i in range(num_levels)
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = spatial_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode images, keeping the reference features.

        Args:
            x: ``(N, C_in, H, W)`` images in ``[-1, 1]``.

        Returns:
            ``(moments, hidden_states)``: the pre-``quant_conv`` moments ``(N, 2*z_channels, H/8, W/8)`` and
            ``L + 1`` feature maps: entry ``i < L`` is level ``i``'s last ResnetBlock output (before its
            downsample), ``(N, ch*ch_mult[i], H/2**i, W/2**i)``; entry ``L`` is the ``conv_in`` output.
        """
        # 1. stem
        h = self.conv_in(x)
        stem = h
        # 2. down levels, keeping each level's output before its downsample
        hidden_states = []
        for level in self.down:
            for block in level.block:
                h = block(h)
            hidden_states.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
        hidden_states.append(stem)
        # 3. bottleneck
        h = self.mid(h)
        # 4. out
        h = self.conv_out(silu_(self.norm_out(h)))
        return h, hidden_states


# ----------------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------------


class VideoMidBlock(nn.Module):
    """The decoder's bottleneck: VideoResBlock, single-head spatial self-attention, VideoResBlock."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = VideoResBlock(channels, channels)
        self.attn_1 = SpatialSelfAttention(channels)
        self.block_2 = VideoResBlock(channels, channels)

    def forward(
        self, x: torch.Tensor, num_frames: int, *, temporal: bool = True, slices: int | None = None
    ) -> torch.Tensor:
        """``(B*T, C, h, w) -> (B*T, C, h, w)``."""
        h = self.block_1(x, num_frames, temporal=temporal, slices=slices)
        h = in_slices(self.attn_1, h, slices)
        return self.block_2(h, num_frames, temporal=temporal, slices=slices)


class UpLevel(nn.Module):
    """One decoder resolution: ``block`` (VideoResBlocks) and an optional ``upsample``.

    The decoder runs the reference refinement between the two, so ``forward`` covers the blocks only.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, upsample: bool) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(VideoResBlock(widths[i], widths[i + 1]) for i in range(num_blocks))
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(
        self, x: torch.Tensor, num_frames: int, *, temporal: bool = True, slices: int | None = None
    ) -> torch.Tensor:
        """``(B*T, C_in, H, W) -> (B*T, C_out, H, W)``."""
        for block in self.block:
            x = block(x, num_frames, temporal=temporal, slices=slices)
        return x


class VideoDecoder(nn.Module):
    """The dual-reference video decoder (``autoencoder_dualref.VideoDecoder``, ``time_mode='conv-only'``).

    ``attn_refinement[i]`` (``i < L``) refines level ``i`` after its blocks: a ``FusionCrossAttention`` at the
    levels in ``config.attn_level``, a ``Combiner`` elsewhere. ``attn_refinement[L]`` is the final Combiner
    after ``norm_out``, fed with the encoder's ``conv_in`` features.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        num_levels = len(widths)
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], 3, padding=1)
        self.mid = VideoMidBlock(widths[-1])
        # Listed from level 0 (full resolution) up; run from the deepest level down.
        self.up = nn.ModuleList(
            UpLevel(widths[min(i + 1, num_levels - 1)], widths[i], config.num_res_blocks + 1, upsample=i != 0)
            for i in range(num_levels)
        )
        refinement: list[nn.Module] = [
            FusionCrossAttention(widths[i], config.fusion_heads, config.fusion_dim_head)
            if i in config.attn_level
            else Combiner(widths[i])
            for i in range(num_levels)
        ]
        refinement.append(Combiner(widths[0]))
        self.attn_refinement = nn.ModuleList(refinement)
        self.norm_out = spatial_norm(widths[0])
        self.conv_out = TimeMixConv(widths[0], config.out_ch)

    def forward(
        self,
        z: torch.Tensor,
        ref_context: Sequence[torch.Tensor] | None,
        num_frames: int,
        *,
        temporal: bool = True,
        ref_frames: RefFrames = (0, -1),
        slices: int | None = None,
    ) -> torch.Tensor:
        """Decode a clip of latent frames with the key frames' reference features.

        Args:
            z: ``(B*T, z_channels, h, w)`` latent frames in VAE space.
            ref_context: ``L + 1`` tensors ``(B, C_i, 2, H_i, W_i)``, the encoder hidden states of the first
                and last key frame (``Encoder.forward``'s order); None skips every reference refinement.
            num_frames: T, the length of the clip every temporal layer sees.
            temporal: False runs the spatial path only (no ``time_stack``, no ``time_mix_conv``).
            ref_frames: the frames the Combiners add reference 0 and 1 to (see ``Combiner``).
            slices: run the large layers in this many pieces, the per-frame (2-D) ones by frames and the
                temporal convs by rows (``in_slices``): the same values up to float32 rounding, with a lower
                peak; None runs each layer once over the whole clip.

        Returns:
            ``(B, out_ch, T, 8h, 8w)``.
        """
        sliced = {"slices": slices}

        def refine(i: int, h: torch.Tensor) -> torch.Tensor:
            if ref_context is None:
                return h
            return self.attn_refinement[i](h, ref_context[i], num_frames, ref_frames=ref_frames)

        # 1. latent to features (no post_quant_conv: the official decode path skips it)
        h = self.conv_in(z)
        # 2. bottleneck
        h = self.mid(h, num_frames, temporal=temporal, **sliced)
        # 3. up levels, deepest first: blocks, reference refinement, upsample
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            if can_overwrite():
                # block by block here rather than through level(h): that call would keep the level's input
                # (a full-resolution map of the previous level's width) alive until the level returns; and
                # each block in its two steps, so that its input is freed before the temporal branch
                for block in level.block:
                    if _hooked(block):  # e.g. accelerate's offload hooks, which only a module call runs
                        h = block(h, num_frames, temporal=temporal, slices=slices)
                        continue
                    h = block.spatial(h, slices=slices)
                    h = block.mix(h, num_frames, slices=slices) if temporal else h
            else:
                h = level(h, num_frames, temporal=temporal, **sliced)
            h = refine(i, h)
            if level.upsample is not None:
                h = in_slices(level.upsample, h, slices)
        # 4. out: norm, swish, final Combiner on the conv_in features, conv + time mixing
        h = in_slices(lambda x: silu_(self.norm_out(x)), h, slices)
        h = refine(len(self.up), h)
        return self.conv_out(h, num_frames, temporal=temporal, **sliced)


# ----------------------------------------------------------------------------------------------------------
# Autoencoder
# ----------------------------------------------------------------------------------------------------------


@dataclass
class EncoderOutput:
    """The posterior of ``encode`` plus the decoder's reference features.

    Attributes:
        moments: ``(N, 2*embed_dim, H/8, W/8)`` the ``quant_conv`` output (mean, then raw logvar).
        mean, logvar, std: ``(N, embed_dim, H/8, W/8)``; ``logvar`` is clamped to ``[-30, 20]`` and
            ``std = exp(logvar / 2)``.
        hidden_states: ``L + 1`` maps, see ``Encoder.forward``.
    """

    moments: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    std: torch.Tensor
    hidden_states: list[torch.Tensor]

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """A posterior sample ``mean + std * noise`` in float32 (as the official sample under autocast);
        the caller draws ``noise``, ``(N, embed_dim, H/8, W/8)``."""
        return self.mean.float() + self.std.float() * noise.to(self.mean.device, torch.float32)


class AutoencoderKLDualRef(nn.Module):
    """``AutoencoderKL_Dualref``: per-image 2-D encoder, dual-reference video decoder.

    Latents here are in VAE space; the diffusion model's space is this times ``config.scale_factor``.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.decoder = VideoDecoder(config)

    @property
    def num_levels(self) -> int:
        return len(self.config.ch_mult)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """Encode images independently.

        Args:
            x: ``(N, in_channels, H, W)`` in ``[-1, 1]``, H and W divisible by ``2 ** (L - 1)``.

        Returns:
            The posterior and the ``L + 1`` hidden states (the decoder's references come from these).
        """
        # 1. encoder
        h, hidden_states = self.encoder(x)
        # 2. moments
        moments = self.quant_conv(h)  # (N, 2*embed_dim, H/8, W/8)
        # 3. diagonal Gaussian posterior
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        return EncoderOutput(
            moments=moments, mean=mean, logvar=logvar, std=torch.exp(0.5 * logvar), hidden_states=hidden_states
        )

    def decode(
        self,
        z: torch.Tensor,
        ref_context: Sequence[torch.Tensor] | None,
        *,
        references: bool = True,
        temporal: bool = True,
        ref_frames: RefFrames = (0, -1),
        slices: int | None = None,
    ) -> torch.Tensor:
        """Decode one clip; all T frames go through together.

        The keywords are ablations and chunking aids (``toonctl.pipelines.decoders``); their defaults are the
        official decoder.

        Args:
            z: ``(B, embed_dim, T, h, w)`` latent in VAE space (model-space latent / ``scale_factor``).
            ref_context: ``L + 1`` tensors ``(B, C_i, 2, H_i, W_i)``: ``encode(...).hidden_states[i]`` of the
                first and the last key frame, stacked on the frame axis (may be None without ``references``).
            references: False skips every Combiner and fusion cross-attention (no reference injection).
            temporal: False decodes with the spatial path only: VideoResBlocks without their ``time_stack``
                and no ``time_mix_conv``, so frames no longer see each other.
            ref_frames: the frames of this clip the Combiners add reference 0 and reference 1 to; None for a
                reference whose key frame is outside this clip (a chunk of a longer one).
            slices: pieces the large layers run in (``VideoDecoder.forward``): a lower peak, the same
                output up to float32 rounding. The temporal norms still see the whole clip.

        Returns:
            ``(B, out_ch, T, 8h, 8w)``.
        """
        if z.dim() != 5:
            raise ValueError(f"decode expects z of shape (B, C, T, h, w), got {tuple(z.shape)}")
        num_frames = z.shape[2]
        if any(f is not None and not -num_frames <= f < num_frames for f in ref_frames) or len(ref_frames) != 2:
            raise ValueError(f"ref_frames {ref_frames} must be two frame indices (or None) below T={num_frames}")
        if references:
            _check_ref_context(ref_context, z.shape[0], self.num_levels)
        refs = ref_context if references else None
        return self.decoder(fold_frames(z), refs, num_frames, temporal=temporal, ref_frames=ref_frames, slices=slices)


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` runs more than its ``forward``: hooks, or accelerate's ``_hf_hook``."""
    return bool(module._forward_pre_hooks or module._forward_hooks or hasattr(module, "_hf_hook"))


def _check_ref_context(ref_context: Sequence[torch.Tensor] | None, batch: int, num_levels: int) -> None:
    if ref_context is None:
        raise ValueError("decode needs ref_context unless references=False")
    if len(ref_context) != num_levels + 1:
        raise ValueError(f"ref_context has {len(ref_context)} entries, expected {num_levels + 1}")
    for i, ref in enumerate(ref_context):
        if ref.dim() != 5 or ref.shape[0] != batch or ref.shape[2] != 2:
            raise ValueError(f"ref_context[{i}] must be (B={batch}, C, 2, H, W), got {tuple(ref.shape)}")


def _check_config(config: AutoencoderConfig) -> None:
    widths = [config.ch * m for m in config.ch_mult]
    if any(w % NORM_GROUPS for w in widths) or config.ch % NORM_GROUPS:
        raise ValueError(f"VAE widths must be multiples of {NORM_GROUPS} (GroupNorm), got ch={config.ch}, {widths}")
    if config.ch_mult[0] != 1:
        raise ValueError(
            f"ch_mult[0] must be 1: the final Combiner adds conv_in features (ch={config.ch}) to level-0 "
            f"features (ch*ch_mult[0]={widths[0]})"
        )
    if config.embed_dim != config.z_channels:
        raise ValueError(
            f"embed_dim={config.embed_dim} != z_channels={config.z_channels}: the decode path has no "
            "post_quant_conv, so latents enter the decoder's conv_in directly"
        )
    bad = [i for i in config.attn_level if not 0 <= i < len(widths)]
    if bad:
        raise ValueError(f"attn_level {config.attn_level} names levels outside 0..{len(widths) - 1}")
