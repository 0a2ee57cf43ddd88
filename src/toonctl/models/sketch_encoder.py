"""The sketch encoder: a ControlNet that turns per-frame line art into residuals for the UNet's skips.

ToonCrafter's Hugging Face repository ships ``sketch_encoder.ckpt`` (364,227,952 parameters) but no code
for it. Its keys and shapes are exactly those of the SD-2.1 ControlNet (``cldm/cldm.py::ControlNet`` of
lllyasviel/ControlNet with ``configs/cldm_v21.yaml``, as the community ports mattyamonaca/
ToonCrafter_with_SketchGuidance and kijai/ComfyUI-DynamiCrafterWrapper load it, strictly) with a
1-channel hint. That is what this module is:

* ``input_hint_block``: eight 3x3 convs (SiLU between them, three of stride 2) from the pixel-space hint
  ``(N, 1, H, W)`` to ``(N, model_channels, H/8, W/8)``, added to the output of ``input_blocks[0]``;
* ``input_blocks`` / ``middle_block``: the encoder half of a plain 2-D SD UNet on the 4-channel noisy
  latent (no ``c_concat``): ResBlocks *without* temporal convolution, SpatialTransformers with linear
  projections and a text-only cross-attention (no ``_ip`` weights);
* ``zero_convs`` / ``middle_block_out``: one 1x1 conv per block output, 13 residuals in all.

It reuses the UNet's blocks (``ResBlock(temporal_conv=False)``, ``SpatialTransformer(image_cross_attention=
False)``, ``Downsample``, ``UNetBlock``), so its ``state_dict()`` is the checkpoint's, key for key. The
encoder is frame-independent: every frame is processed on its own, with no temporal layer.

The cross-attention reads whatever context it is given (no text/image split inside): which tokens it
sees is the caller's choice (``toonctl.pipelines.sketch.SketchControl``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.models import fold_frames
from toonctl.models.configs import UNetConfig
from toonctl.models.embeddings import EmbeddingMLP, timestep_embedding
from toonctl.models.unet_blocks import Downsample, ResBlock, SpatialTransformer
from toonctl.models.unet_toon3d import UNetBlock

# A state dict saved from a whole ControlLDM carries this prefix; the released file has none (mattyamonaca
# and kijai load it straight into the bare ControlNet, strictly).
CONTROL_MODEL_PREFIX = "control_model."
# The transformer blocks cut their context to this many tokens: i.e. never (see the module docstring).
_ALL_TOKENS = sys.maxsize


@dataclass(frozen=True)
class SketchEncoderConfig:
    """The ControlNet's architecture; the defaults are ``sketch_encoder.ckpt``'s (``cldm_v21.yaml``).

    Its encoder half must mirror the UNet's (the residuals are added to the UNet's skips), so a config for
    another UNet comes from ``for_unet``.
    """

    in_channels: int = 4  # the noisy latent only
    hint_channels: int = 1
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    hint_block_channels: tuple[int, ...] = (16, 32, 96, 256)  # one stride-2 conv between consecutive entries

    def __post_init__(self) -> None:
        if self.model_channels % 32:
            raise ValueError(f"model_channels must be a multiple of 32 (GroupNorm(32)), got {self.model_channels}")
        if len(self.hint_block_channels) != 4:
            raise ValueError(
                f"hint_block_channels needs 4 entries (3 stride-2 convs: the VAE's factor 8), "
                f"got {self.hint_block_channels}"
            )

    @classmethod
    def for_unet(cls, unet: UNetConfig, **overrides) -> SketchEncoderConfig:
        """The sketch encoder that fits ``unet``: same levels, channels, heads and context width."""
        values = dict(
            in_channels=unet.out_channels,
            model_channels=unet.model_channels,
            attention_resolutions=tuple(unet.attention_resolutions),
            num_res_blocks=unet.num_res_blocks,
            channel_mult=tuple(unet.channel_mult),
            num_head_channels=unet.num_head_channels,
            transformer_depth=unet.transformer_depth,
            context_dim=unet.context_dim,
        )
        return cls(**{**values, **overrides})

    @property
    def num_residuals(self) -> int:
        """One per input block (``1 + levels * num_res_blocks + levels - 1``) plus the middle block."""
        levels = len(self.channel_mult)
        return 1 + levels * self.num_res_blocks + levels - 1 + 1


class SketchEncoder(nn.Module):
    """The sketch ControlNet (see the module docstring). Build on the meta device and load with
    ``load_sketch_encoder``."""

    def __init__(self, config: SketchEncoderConfig | None = None) -> None:
        super().__init__()
        config = config or SketchEncoderConfig()
        self.config = config
        ch = config.model_channels
        emb_dim = ch * 4

        # Registration order follows the checkpoint: time_embed, input_blocks, zero_convs, input_hint_block,
        # middle_block, middle_block_out.
        self.time_embed = EmbeddingMLP(ch, emb_dim)
        self.input_blocks = nn.ModuleList([UNetBlock(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        self.zero_convs = nn.ModuleList([_zero_conv(ch)])
        self.input_hint_block = _hint_block(config.hint_channels, config.hint_block_channels, ch)
        ds = 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * config.model_channels, temporal_conv=False)]
                ch = mult * config.model_channels
                if ds in config.attention_resolutions:
                    layers.append(self._transformer(ch))
                self.input_blocks.append(UNetBlock(*layers))
                self.zero_convs.append(_zero_conv(ch))
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(UNetBlock(Downsample(ch)))
                self.zero_convs.append(_zero_conv(ch))
                ds *= 2
        self.middle_block = UNetBlock(
            ResBlock(ch, emb_dim, temporal_conv=False),
            self._transformer(ch),
            ResBlock(ch, emb_dim, temporal_conv=False),
        )
        self.middle_block_out = _zero_conv(ch)

    def _transformer(self, ch: int) -> SpatialTransformer:
        cfg = self.config
        if ch % cfg.num_head_channels:
            raise ValueError(f"channels {ch} are not a multiple of num_head_channels={cfg.num_head_channels}")
        return SpatialTransformer(
            ch,
            ch // cfg.num_head_channels,
            cfg.num_head_channels,
            cfg.context_dim,
            depth=cfg.transformer_depth,
            image_cross_attention=False,
            text_context_len=_ALL_TOKENS,
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def forward(
        self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
    ) -> list[torch.Tensor]:
        """The control residuals for every frame of ``x``.

        Args:
            x: ``(B, in_channels, T, h, w)`` the noisy latent (without ``c_concat``).
            hint: ``(B, hint_channels, T, 8h, 8w)`` the sketches, white lines on black in [0, 1].
            timesteps: ``(B,)`` integer DDPM timesteps (a 0-d tensor is broadcast), shared by a sample's frames.
            context: ``(B, L, context_dim)`` the tokens every frame attends to.

        Returns:
            ``config.num_residuals`` tensors ``(B*T, C_i, h_i, w_i)``, batch-major: the 12 skip residuals
            in input-block order, then the middle block's (``ToonUNet3D.forward``'s ``control_residuals``).
        """
        b, _, t, h, w = x.shape
        self._check_inputs(x, hint, context)
        dtype = self.dtype

        # 1. time embedding: sinusoids in fp32 (t ~ 1e3 needs the precision), then the weights' dtype;
        # one row per sample, the ResBlocks broadcast it over the frames.
        steps = timesteps.reshape(1).expand(b) if timesteps.ndim == 0 else timesteps
        emb = self.time_embed(timestep_embedding(steps, self.config.model_channels).to(dtype))  # (B, 4*ch)

        # 2. the same context for every frame of a sample: (B, L, C) -> (B*T, L, C)
        context = context.to(dtype).repeat_interleave(t, dim=0)

        # 3. hint: (B, 1, T, 8h, 8w) -> (B*T, ch, h, w)
        guided_hint = self.input_hint_block(fold_frames(hint).to(dtype))

        # 4. input blocks, the hint added after conv_in; every block output through its zero conv
        hidden = fold_frames(x).to(dtype)  # (B*T, in_channels, h, w)
        residuals = []
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs, strict=True)):
            hidden = block(hidden, emb, context, t)
            if index == 0:
                hidden = hidden + guided_hint
            residuals.append(zero_conv(hidden))

        # 5. middle block
        hidden = self.middle_block(hidden, emb, context, t)
        residuals.append(self.middle_block_out(hidden))
        return residuals

    def _check_inputs(self, x: torch.Tensor, hint: torch.Tensor, context: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, T, h, w), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        expected = (b, cfg.hint_channels, t, 8 * h, 8 * w)
        if tuple(hint.shape) != expected:
            raise ValueError(f"hint must be {expected} (8x the latent), got {tuple(hint.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if h % factor or w % factor:
            raise ValueError(f"latent size {(h, w)} must be divisible by {factor}")
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg.context_dim:
            raise ValueError(f"context must be (B={b}, L, {cfg.context_dim}), got {tuple(context.shape)}")


def _zero_conv(channels: int) -> nn.Sequential:
    # Zero-initialised officially (a training detail); a Sequential because the keys are ``zero_convs.N.0.*``.
    return nn.Sequential(nn.Conv2d(channels, channels, 1))


def _hint_block(hint_channels: int, widths: tuple[int, ...], out_channels: int) -> nn.Sequential:
    """``conv(hint, w0)``; per next width ``conv(w, w)``, ``conv(w, w', stride 2)``; ``conv(w_last, out)``;
    SiLU between the convs (weights at the even indices 0..14, as in the checkpoint)."""
    convs = [nn.Conv2d(hint_channels, widths[0], 3, padding=1)]
    for prev, width in zip(widths[:-1], widths[1:], strict=True):
        convs.append(nn.Conv2d(prev, prev, 3, padding=1))
        convs.append(nn.Conv2d(prev, width, 3, padding=1, stride=2))
    convs.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.SiLU()]
    return nn.Sequential(*layers[:-1])


# --------------------------------------------------------------------------------------------- loading


def load_sketch_encoder(
    path: str | Path,
    config: SketchEncoderConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SketchEncoder:
    """Load ``sketch_encoder.ckpt`` (or kijai's ``sketch_encoder-fp16.safetensors``), strictly.

    Accepted containers: a ``torch.save`` state dict, ``{"state_dict": ...}``, or a safetensors file (any
    floating dtype); keys bare or all prefixed ``control_model.``. The module is built on the meta device
    and each tensor is assigned straight to ``device`` in ``dtype``.

    Args:
        path: the weights file.
        config: the architecture (default: the released one, ``SketchEncoderConfig()``).
        device, dtype: where the weights go and their floating dtype.

    Raises:
        CheckpointError: the file cannot be read.
        CheckpointMismatchError: keys missing, unexpected or of the wrong shape (all of them listed).
    """
    from toonctl.checkpoint import load_module, read_state_dict

    state_dict = read_state_dict(path)
    module, keys = check_sketch_encoder(state_dict, config, path=path)
    return load_module(module, state_dict, keys, device=device, dtype=dtype).eval().requires_grad_(False)


def check_sketch_encoder(
    state_dict, config: SketchEncoderConfig | None = None, *, path: str | Path
) -> tuple[SketchEncoder, dict[str, str]]:
    """Check every key and shape of a sketch encoder ``state_dict`` (read from ``path``) without reading data.

    Returns:
        the module built on the meta device, and ``{its key: key in the file}``.

    Raises:
        CheckpointMismatchError: keys missing, unexpected or of the wrong shape (all of them listed).
    """
    from toonctl.checkpoint import build_checked, strip_shared_prefix

    keys = strip_shared_prefix(state_dict, CONTROL_MODEL_PREFIX)
    module = build_checked(
        "sketch_encoder", lambda: SketchEncoder(config), state_dict, keys,
        message=f"{path} does not match the sketch encoder architecture",
        hint="expected ToonCrafter's sketch_encoder.ckpt (toonctl weights fetch --sketch) or kijai's "
        "sketch_encoder-fp16.safetensors, made for the interpolation model in use",
    )  # fmt: skip
    return module, keys
