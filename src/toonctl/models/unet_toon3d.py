"""The ToonCrafter 3-D denoising UNet (v-prediction, 1.44 B parameters at the 512 config).

Reimplements ``UNetModel`` of ``lvdm/modules/networks/openaimodel3d.py`` (ToonCrafter b0c47ff) as
ToonCrafter configures it, plus the 'hybrid' input of ``lvdm/models/ddpm3d.py::DiffusionWrapper``: the
caller concatenates the noisy latent and ``c_concat`` along channels. The module tree is the
official one (``time_embed``, ``fps_embedding``, ``input_blocks``, ``init_attn``, ``middle_block``,
``output_blocks``, ``out``), so ``state_dict()`` equals the checkpoint's ``model.diffusion_model.*`` with
that prefix removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from toonctl.models import fold_frames, unfold_frames
from toonctl.models.configs import UNetConfig
from toonctl.models.embeddings import EmbeddingMLP, timestep_embedding
from toonctl.models.layers import FP32GroupNorm, InplaceSiLU, Upsample
from toonctl.models.unet_blocks import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    TemporalConvBlock,
    TemporalTransformer,
)

INIT_ATTN_HEADS = 8  # init_attn always has 8 heads of num_head_channels (hard-coded officially)


class UNetBlock(nn.Sequential):
    """One entry of ``input_blocks`` / ``output_blocks`` / ``middle_block``: layers run in order.

    Each layer gets what it needs: ResBlocks the embedding, SpatialTransformers the per-frame context,
    TemporalTransformers the frames unfolded to ``(B, C, T, H, W)``; anything else only the features.
    """

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Run the layers in order.

        Args:
            h: ``(B*T, C, H, W)``.
            emb: ``(B, E)`` time (+ fps) embedding.
            context: ``(B*T, L, context_dim)``.
            num_frames: T.

        Returns:
            ``(B*T, C', H', W')``.
        """
        run = self._checkpointed if self.gradient_checkpointing and torch.is_grad_enabled() else _call
        for layer in self:
            if isinstance(layer, ResBlock):
                h = run(layer, h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = run(layer, h, context)
            elif isinstance(layer, TemporalTransformer):
                h = fold_frames(run(layer, unfold_frames(h, num_frames)))  # via (B, C, T, H, W)
            else:
                h = layer(h)
        return h

    # Training memory saver (``ToonUNet3D.set_gradient_checkpointing``): ResBlocks and transformers recompute
    # their activations in the backward pass instead of storing them, as the official ``use_checkpoint``.
    gradient_checkpointing = False

    @staticmethod
    def _checkpointed(layer: nn.Module, *args):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(layer, *args, use_reentrant=False)


def _call(layer: nn.Module, *args):
    return layer(*args)


@dataclass
class UNetConditioning:
    """The per-call constant part of the UNet's input, computed once per sampling run.

    Attributes:
        frame_context: ``(B*T, L', context_dim)`` the per-frame cross-attention context.
        fs_embedding: ``(B, 4*model_channels)`` the frame-stride embedding, or None without fs conditioning.
        num_frames: T.
    """

    frame_context: torch.Tensor
    fs_embedding: torch.Tensor | None
    num_frames: int


class ToonUNet3D(nn.Module):
    """ToonCrafter's video UNet: 2-D ResBlocks and spatial transformers over frames folded into the
    batch, temporal convolutions and temporal transformers across frames.

    Args:
        config: the architecture (defaults: the released 512 checkpoint).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        ch = config.model_channels
        emb_dim = ch * 4

        # 1. time and frame-stride embeddings
        self.time_embed = EmbeddingMLP(ch, emb_dim)
        self.fps_embedding = EmbeddingMLP(ch, emb_dim) if config.fs_condition else None

        # 2. encoder: conv_in, then per level num_res_blocks blocks and a Downsample (not after the last)
        self.input_blocks = nn.ModuleList([UNetBlock(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        self.init_attn = None
        if config.addition_attention:
            self.init_attn = UNetBlock(
                TemporalTransformer(
                    ch, INIT_ATTN_HEADS, config.num_head_channels, depth=config.transformer_depth, conv_proj=True
                )
            )
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * config.model_channels, temporal_conv=config.temporal_conv)]
                ch = mult * config.model_channels
                if ds in config.attention_resolutions:
                    layers += self._attention_layers(ch)
                self.input_blocks.append(UNetBlock(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(UNetBlock(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2

        # 3. middle: ResBlock, attention (always, whatever the resolution), ResBlock
        self.middle_block = UNetBlock(
            ResBlock(ch, emb_dim, temporal_conv=config.temporal_conv),
            *self._attention_layers(ch),
            ResBlock(ch, emb_dim, temporal_conv=config.temporal_conv),
        )

        # 4. decoder: per level num_res_blocks + 1 blocks, each eating one skip; Upsample ends a level
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                skip = skip_channels.pop()
                layers = [
                    ResBlock(ch + skip, emb_dim, mult * config.model_channels, temporal_conv=config.temporal_conv)
                ]
                ch = mult * config.model_channels
                if ds in config.attention_resolutions:
                    layers += self._attention_layers(ch)
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetBlock(*layers))

        # 5. out
        self.out = nn.Sequential(
            FP32GroupNorm(32, ch), InplaceSiLU(), nn.Conv2d(config.model_channels, config.out_channels, 3, padding=1)
        )

    def _attention_layers(self, ch: int) -> list[nn.Module]:
        """SpatialTransformer (+ TemporalTransformer) for a level of ``ch`` channels, ``ch / head`` heads."""
        cfg = self.config
        heads = ch // cfg.num_head_channels
        layers: list[nn.Module] = [
            SpatialTransformer(
                ch,
                heads,
                cfg.num_head_channels,
                cfg.context_dim,
                depth=cfg.transformer_depth,
                image_cross_attention=cfg.image_cross_attention,
                text_context_len=cfg.text_context_len,
            )
        ]
        if cfg.temporal_attention:
            layers.append(TemporalTransformer(ch, heads, cfg.num_head_channels, depth=cfg.transformer_depth))
        return layers

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (the compute dtype of the forward pass)."""
        return self.time_embed[0].weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute ResBlock and transformer activations in the backward pass (training memory saver, off by
        default; outputs and gradients are unchanged)."""
        for module in self.modules():
            if isinstance(module, UNetBlock):
                module.gradient_checkpointing = enabled

    def set_dropout(self, p: float) -> None:
        """Set the dropout of every ResBlock (before ``out_layers``' last conv) and temporal-conv stage.

        The official training uses 0.1 for both (``unet_config.dropout``; ``TemporalConvBlock`` hard-codes
        it); the released config's inference sees none (eval mode). Only active in train mode.
        """
        for module in self.modules():
            if isinstance(module, ResBlock):
                module.out_layers[2].p = p
            elif isinstance(module, TemporalConvBlock):
                for stage in (module.conv2, module.conv3, module.conv4):
                    stage[2].p = p

    @property
    def num_control_residuals(self) -> int:
        """How many ``control_residuals`` ``forward`` takes: one per skip tensor, plus the middle block."""
        return len(self.input_blocks) + 1

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | UNetConditioning,
        fs: torch.Tensor | None = None,
        control_residuals: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict v for a batch of videos.

        Args:
            x: ``(B, in_channels, T, h, w)``: the noisy latent concatenated with ``c_concat`` on channels.
                ``h`` and ``w`` must be divisible by ``2 ** (len(channel_mult) - 1)``.
            timesteps: ``(B,)`` integer DDPM timesteps (a 0-d tensor is broadcast).
            context: ``(B, L, context_dim)``: ``text_context_len`` text tokens, then image tokens. When
                ``L == text_context_len + image_tokens_per_frame * T`` frame ``i`` sees the text and image
                tokens ``[16 i, 16 i + 16)``; for any other L every frame sees the whole context. Or the
                ``prepare_conditioning`` result, which also carries the fs embedding (``fs`` is then unused):
                a sampler computes it once instead of at every step.
            fs: ``(B,)`` integer frame stride; None uses ``config.default_fs``.
            control_residuals: None, or ``num_control_residuals`` tensors ``(B*T, C_i, h_i, w_i)`` (the
                sketch encoder's): the last is added after the middle block, the others to the skip
                tensors, in the order the skips are popped (from the end).

        Returns:
            ``(B, out_channels, T, h, w)`` in the dtype of ``x``.
        """
        b, _, t, _, _ = x.shape
        if not isinstance(context, UNetConditioning):
            self._check_inputs(x, context)
            context = self.prepare_conditioning(context, fs, t)
        elif context.num_frames != t or context.frame_context.shape[0] != b * t:
            raise ValueError(f"prepared conditioning is for {context.num_frames} frames, x has {t} (batch {b})")
        self._check_controls(control_residuals)
        dtype = self.dtype

        # 1. time + fps embedding: sinusoids in fp32 (t ~ 1e3 needs the precision), cast to the weights'
        # dtype; one row per sample, the ResBlocks broadcast it over the frames.
        emb = self.time_embed(timestep_embedding(_per_sample(timesteps, b), self.config.model_channels).to(dtype))
        if context.fs_embedding is not None:
            emb = emb + context.fs_embedding  # (B, 4*model_channels)

        # 2. per-frame context (B*T, L', C), prepared once per run
        context = context.frame_context

        # 3. input blocks (init_attn right after conv_in), every output kept as a skip
        h = fold_frames(x).to(dtype)  # (B*T, in_channels, h, w)
        skips = []
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, t)
            if index == 0 and self.init_attn is not None:
                h = self.init_attn(h, emb, context, t)
            skips.append(h)

        # 4. middle block (+ the last control residual)
        controls = list(control_residuals) if control_residuals is not None else None
        h = self.middle_block(h, emb, context, t)
        if controls is not None:
            h = h + controls.pop().to(h.dtype)

        # 5. output blocks: concat [h, skip] (h first), skips and controls popped from the end
        for block in self.output_blocks:
            skip = skips.pop()
            if controls is not None:
                skip = skip + controls.pop().to(skip.dtype)
            h = block(torch.cat([h, skip], dim=1), emb, context, t)

        # 6. out
        y = self.out(h)  # (B*T, out_channels, h, w)
        return unfold_frames(y, t).contiguous().to(x.dtype)

    def prepare_conditioning(
        self, context: torch.Tensor, fs: torch.Tensor | None, num_frames: int
    ) -> UNetConditioning:
        """The per-frame context and the fs embedding for ``forward`` (constant during sampling).

        Args:
            context: ``(B, L, context_dim)``, see ``forward``.
            fs: ``(B,)`` integer frame stride, or None for ``config.default_fs``.
            num_frames: T.
        """
        b = context.shape[0]
        dtype = self.dtype
        fs_embedding = None
        if self.fps_embedding is not None:
            if fs is None:
                fs = torch.full((b,), self.config.default_fs, dtype=torch.long, device=context.device)
            fs_sin = timestep_embedding(_per_sample(fs, b), self.config.model_channels).to(dtype)
            fs_embedding = self.fps_embedding(fs_sin)  # (B, 4*model_channels)
        frame_context = self._frame_context(context.to(dtype), num_frames)  # (B*T, L', C)
        return UNetConditioning(frame_context=frame_context, fs_embedding=fs_embedding, num_frames=num_frames)

    def _frame_context(self, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(B, L, C) -> (B*T, L', C)``, batch-major (see ``forward``)."""
        cfg = self.config
        b, length, c = context.shape
        n_text = cfg.text_context_len
        if length != n_text + cfg.image_tokens_per_frame * num_frames:
            return context.repeat_interleave(num_frames, dim=0)  # (B*T, L, C)
        text = context[:, :n_text].repeat_interleave(num_frames, dim=0)  # (B*T, n_text, C)
        image = context[:, n_text:].reshape(b * num_frames, cfg.image_tokens_per_frame, c)  # (B*T, 16, C)
        return torch.cat([text, image], dim=1)  # (B*T, n_text + 16, C)

    def _check_inputs(self, x: torch.Tensor, context: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, T, h, w), got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[3] % factor or x.shape[4] % factor:
            raise ValueError(f"latent size {tuple(x.shape[3:])} must be divisible by {factor}")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != cfg.context_dim:
            raise ValueError(f"context must be (B={x.shape[0]}, L, {cfg.context_dim}), got {tuple(context.shape)}")

    def _check_controls(self, control_residuals: Sequence[torch.Tensor] | None) -> None:
        if control_residuals is not None and len(control_residuals) != self.num_control_residuals:
            raise ValueError(f"expected {self.num_control_residuals} control residuals, got {len(control_residuals)}")


def _per_sample(values: torch.Tensor, batch: int) -> torch.Tensor:
    """``()`` or ``(B,)`` -> ``(B,)``."""
    return values.reshape(1).expand(batch) if values.ndim == 0 else values


def _check_config(config: UNetConfig) -> None:
    if not config.temporal_selfatt_only and config.addition_attention:
        raise ValueError("temporal_selfatt_only=False is not supported: ToonCrafter's init_attn is self-attention")
    for mult in config.channel_mult:
        ch = mult * config.model_channels
        if ch % config.num_head_channels:
            raise ValueError(
                f"channels {ch} (model_channels {config.model_channels} x {mult}) are not a multiple of "
                f"num_head_channels={config.num_head_channels}"
            )
