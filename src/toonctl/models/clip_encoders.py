"""The two OpenCLIP ViT-H-14 towers as ToonCrafter uses them, and the CLIP image preprocessing.

Reimplements ``lvdm/modules/encoders/condition.py`` of the official repository:

* ``FrozenOpenCLIPEmbedder`` (``layer="penultimate"``) -> ``OpenCLIPTextEncoder``: token + position
  embeddings, every residual block but the last (causal mask), ``ln_final``; no projection, no pooling;
* ``FrozenOpenCLIPImageEmbedderV2`` -> ``OpenCLIPVisionEncoder`` (all 257 ViT tokens after the last block,
  without ``ln_post`` or ``proj``) and ``preprocess_clip_image`` (its kornia resize + CLIP normalisation).

The residual blocks follow ``open_clip/transformer.py`` (2.22) so the checkpoint loads by stripping the
prefix: ``ln_1``, ``attn.in_proj_weight``/``in_proj_bias`` (packed q, k, v), ``attn.out_proj``, ``ln_2``,
``mlp.c_fc``, ``mlp.c_proj`` with exact GELU. Token tensors are ``(B, N, width)``; the official code runs
the blocks sequence-first, which is only a layout difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toonctl.models.attention import attention, merge_heads, split_heads
from toonctl.models.configs import TextEncoderConfig, VisionEncoderConfig
from toonctl.models.layers import normal_parameter

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LayerNorm(nn.LayerNorm):
    """OpenCLIP's LayerNorm: the output has the input's dtype.

    Under autocast ``layer_norm`` returns fp32; OpenCLIP casts it back, which keeps the vision tower's
    residual stream in half precision exactly as the official run does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).to(x.dtype)


class PackedSelfAttention(nn.Module):
    """Multi-head self-attention with one packed q/k/v projection (``nn.MultiheadAttention``'s weights)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, width) -> (B, N, width)``; ``mask`` is additive, broadcastable to ``(B, heads, N, N)``."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # (B, heads, N, D)
        return self.out_proj(merge_heads(attention(q, k, v, mask=mask)))


class MLP(nn.Module):
    """``c_fc``, exact GELU, ``c_proj``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (no LayerScale)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = PackedSelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock``s under OpenCLIP's name ``resblocks``."""

    def __init__(self, width: int, heads: int, layers: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


def causal_mask(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n, n)`` additive mask: 0 on and below the diagonal, ``-inf`` above (token i sees tokens <= i)."""
    return torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu_(1)


class OpenCLIPTextEncoder(nn.Module):
    """OpenCLIP text tower up to the penultimate block, then ``ln_final``.

    Only ``config.layers_used`` blocks exist: the official tower's last block is never run, so it is not
    allocated (its checkpoint keys, ``text_projection`` and ``logit_scale`` are dropped when loading).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        if not 0 < config.layers_used <= config.layers:
            raise ValueError(f"layers_used={config.layers_used} must be in 1..layers={config.layers}")
        self.config = config
        # N(0, 1) like nn.Embedding's own init, without nn.init on the meta device (see normal_parameter)
        self.token_embedding = nn.Embedding.from_pretrained(torch.randn(config.vocab_size, config.width), freeze=False)
        self.positional_embedding = normal_parameter(config.context_length, config.width, std=0.01)
        self.transformer = Transformer(config.width, config.heads, config.layers_used, config.mlp_ratio)
        self.ln_final = LayerNorm(config.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed token ids.

        Args:
            tokens: ``(B, N)`` int64 ids, ``N <= context_length`` (77 from ``CLIPTokenizer``).

        Returns:
            ``(B, N, width)``: every position, padding included.
        """
        n = tokens.shape[1]
        if n > self.config.context_length:
            raise ValueError(f"{n} tokens exceed the context length {self.config.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:n]  # (B, N, width)
        x = self.transformer(x, causal_mask(n, dtype=x.dtype, device=x.device))
        return self.ln_final(x)


class VisionTransformer(nn.Module):
    """OpenCLIP's ``visual`` tower without its head (``ln_post`` and ``proj`` are never used)."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
        width = config.width
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = normal_parameter(width, std=width**-0.5)
        self.positional_embedding = normal_parameter(config.num_tokens, width, std=width**-0.5)
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, config.heads, config.layers, config.mlp_ratio)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, 1 + (S/patch)^2, width)``: class token first, then patches row-major."""
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (B, width, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, P, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1 + P, width)
        return self.transformer(self.ln_pre(x))


class OpenCLIPVisionEncoder(nn.Module):
    """The image embedder: ViT tokens of CLIP-normalised 224x224 images (``embedder.model`` in the checkpoint)."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """ViT tokens of preprocessed images.

        Args:
            pixels: ``(B, 3, 224, 224)``, already through ``preprocess_clip_image``.

        Returns:
            ``(B, 257, width)``: all tokens after the last block, no ``ln_post``, no projection.
        """
        size = self.config.image_size
        if tuple(pixels.shape[-2:]) != (size, size):
            got = tuple(pixels.shape[-2:])
            raise ValueError(f"expected {size}x{size} pixels, got {got}: run preprocess_clip_image first")
        return self.visual(pixels)


def gaussian_kernel1d(size: int, sigma: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(size,)`` sampled Gaussian centred on ``size // 2``, normalised to sum 1 (kornia's ``gaussian``)."""
    sigma_t = torch.tensor(sigma, dtype=dtype, device=device)  # sigma rounded to dtype first, as kornia does
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-x.pow(2) / (2 * sigma_t.pow(2)))
    return g / g.sum()


def _blur_along(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Depthwise correlation of ``(B, C, H, W)`` with a 1-D kernel along ``dim`` (-1: W, -2: H), reflect border."""
    c, k = x.shape[1], kernel.numel()
    pad = ((k - 1) // 2, k - 1 - (k - 1) // 2)
    if dim == -1:
        x = F.pad(x, (*pad, 0, 0), mode="reflect")
        weight = kernel.view(1, 1, 1, k)
    else:
        x = F.pad(x, (0, 0, *pad), mode="reflect")
        weight = kernel.view(1, 1, k, 1)
    return F.conv2d(x, weight.expand(c, 1, -1, -1), groups=c)


def resize_antialiased_bicubic(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``kornia.geometry.resize(images, size, interpolation="bicubic", align_corners=True, antialias=True)``.

    When either side shrinks, both axes are first blurred (W pass, then H pass) with a Gaussian of
    ``sigma = max((factor - 1) / 2, 0.001)`` and ``int(max(4 * sigma, 3))`` taps, bumped to odd; a growing axis
    gets the near-identity sigma 0.001. Then a bicubic ``F.interpolate`` with ``align_corners=True``.

    Args:
        images: ``(B, C, H, W)``.
        size: output ``(height, width)``.

    Returns:
        ``(B, C, *size)``; ``images`` itself when it already has that size.
    """
    h, w = images.shape[-2:]
    if (h, w) == tuple(size):
        return images
    factors = (h / size[0], w / size[1])
    x = images
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        taps = [int(max(4.0 * s, 3)) for s in sigmas]
        taps = [t + 1 if t % 2 == 0 else t for t in taps]
        for dim, sigma, k in ((-1, sigmas[1], taps[1]), (-2, sigmas[0], taps[0])):
            x = _blur_along(x, gaussian_kernel1d(k, sigma, dtype=x.dtype, device=x.device), dim)
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=True)


def preprocess_clip_image(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The official embedder's ``preprocess``: squash-resize to ``size`` x ``size``, map to [0, 1], CLIP-normalise.

    Computed in float32 whatever the input dtype: the resize is cheap, and half precision would round the
    pixels before the ViT ever sees them. The result has the input's dtype.

    Args:
        images: ``(B, 3, H, W)`` in [-1, 1]; any H, W (not aspect-preserving).
        size: output side.

    Returns:
        ``(B, 3, size, size)``.
    """
    x = images.to(torch.promote_types(images.dtype, torch.float32))
    x = resize_antialiased_bicubic(x, (size, size))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(images.dtype)
