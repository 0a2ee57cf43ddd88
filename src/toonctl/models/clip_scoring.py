"""CLIP scoring with the complete OpenCLIP ViT-H-14 towers that ToonCrafter's ``model.ckpt`` carries.

Inference uses the text tower only up to its penultimate block and the vision tower's tokens without a
head (``toonctl.models.clip_encoders``). The checkpoint also holds the rest of each OpenCLIP model, which
scoring needs (CLIP_img, CLIP_txt of ToonCrafter's Table 1):

* text (``cond_stage_model.model.*``): every residual block (the last one included), ``ln_final``, the
  features at the end-of-text token (the highest token id, as ``open_clip.CLIP.encode_text`` takes
  ``tokens.argmax(-1)``), times ``text_projection`` ``(width, embed_dim)``;
* vision (``embedder.model.visual.*``): the ViT, ``ln_post`` on the class token, times ``proj``
  ``(width, embed_dim)`` (``open_clip.VisionTransformer`` with ``pool_type="tok"``).

Embeddings are L2-normalised, so every similarity is a cosine in [-1, 1].

Images are prepared as the model's own image embedder prepares them (``preprocess_clip_image``: the whole
frame squash-resized to 224x224 with an antialiased bicubic, CLIP normalisation), or, with
``crop="center"``, the central square first (OpenCLIP's own eval transform keeps the aspect ratio that way).

Loading reads only these keys, from ``.safetensors`` tensor by tensor or ``torch.load(weights_only=True)``
memory-mapped, and never builds the UNet or the autoencoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toonctl.checkpoint import (
    IMAGE_EMBEDDER_PREFIX,
    TEXT_PREFIX,
    check_modules,
    load_module,
    read_state_dict,
)
from toonctl.models.clip_encoders import LayerNorm, OpenCLIPTextEncoder, VisionTransformer, preprocess_clip_image
from toonctl.models.configs import TextEncoderConfig, ToonCrafterConfig, VisionEncoderConfig

VISION_PREFIX = IMAGE_EMBEDDER_PREFIX + "visual."
CROPS = ("squash", "center")


class CLIPTextTower(OpenCLIPTextEncoder):
    """The whole OpenCLIP text tower: all blocks, ``ln_final``, end-of-text pooling and ``text_projection``."""

    def __init__(self, config: TextEncoderConfig, embed_dim: int) -> None:
        super().__init__(replace(config, layers_used=config.layers))
        self.text_projection = nn.Parameter(torch.empty(config.width, embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` token ids (``CLIPTokenizer``) -> ``(B, embed_dim)`` projected features, not normalised."""
        features = super().forward(tokens)  # (B, N, width), after ln_final
        end_of_text = tokens.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
        pooled = features[torch.arange(tokens.shape[0], device=tokens.device), end_of_text]  # (B, width)
        return pooled @ self.text_projection


class CLIPVisionTower(VisionTransformer):
    """The whole OpenCLIP ViT: ``ln_post`` on the class token, then ``proj``."""

    def __init__(self, config: VisionEncoderConfig, embed_dim: int) -> None:
        super().__init__(config)
        self.config = config
        self.ln_post = LayerNorm(config.width)
        self.proj = nn.Parameter(torch.empty(config.width, embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed pixels -> ``(B, embed_dim)`` projected features, not normalised."""
        tokens = super().forward(pixels)  # (B, 1 + P, width)
        return self.ln_post(tokens[:, 0]) @ self.proj


def _keys(state_dict: Mapping[str, torch.Tensor], prefix: str, skip: Sequence[str] = ()) -> dict[str, str]:
    """``{local key: checkpoint key}`` for the keys under ``prefix``, less the local names in ``skip``."""
    return {k[len(prefix) :]: k for k in state_dict if k.startswith(prefix) and k[len(prefix) :] not in skip}


def _embed_dim(state_dict: Mapping[str, torch.Tensor], key: str) -> int:
    if key not in state_dict:
        from toonctl.errors import CheckpointMismatchError

        raise CheckpointMismatchError(
            "the checkpoint has no CLIP projection head, which CLIP scoring needs",
            missing=[key],
            hint="use the full official model.ckpt (a pruned or converted file may have dropped it)",
        )
    shape = state_dict.shape(key) if hasattr(state_dict, "shape") else tuple(state_dict[key].shape)
    return int(shape[-1])


class CLIPScorer(nn.Module):
    """L2-normalised CLIP embeddings of frames and captions, and their cosine similarities."""

    def __init__(self, text: CLIPTextTower, vision: CLIPVisionTower) -> None:
        super().__init__()
        self.text = text
        self.vision = vision
        self._tokenizer = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: ToonCrafterConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> CLIPScorer:
        """Read the two towers of an official-layout checkpoint (``model.ckpt`` or ``.safetensors``)."""
        return cls.from_state_dict(read_state_dict(path), config, device=device, dtype=dtype)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        config: ToonCrafterConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> CLIPScorer:
        """Build both towers on the meta device, check every key and shape, then load only their tensors."""
        text_keys = _keys(state_dict, TEXT_PREFIX, skip=("logit_scale",))
        vision_keys = _keys(state_dict, VISION_PREFIX)
        text_dim = _embed_dim(state_dict, TEXT_PREFIX + "text_projection")
        vision_dim = _embed_dim(state_dict, VISION_PREFIX + "proj")
        with torch.device("meta"):
            text = CLIPTextTower(config.text, text_dim)
            vision = CLIPVisionTower(config.vision, vision_dim)
        check_modules(
            {"text": text, "vision": vision},
            state_dict,
            {"text": text_keys, "vision": vision_keys},
            message="the checkpoint's CLIP towers do not match the config",
        )
        if text_dim != vision_dim:
            raise ValueError(f"text and image embeddings differ in size ({text_dim} vs {vision_dim})")
        text = load_module(text, state_dict, text_keys, device=device, dtype=dtype)
        vision = load_module(vision, state_dict, vision_keys, device=device, dtype=dtype)
        return cls(text, vision).eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.vision.proj.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.proj.dtype

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from toonctl.models.tokenizer import CLIPTokenizer

            self._tokenizer = CLIPTokenizer()
        return self._tokenizer

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, *, crop: str = "squash", batch_size: int = 16) -> torch.Tensor:
        """Unit-norm image embeddings.

        Args:
            images: ``(B, 3, H, W)`` RGB in [-1, 1], any size.
            crop: ``"squash"`` (whole frame resized to a square, as ToonCrafter's embedder) or ``"center"``
                (the central ``min(H, W)`` square).
            batch_size: images per forward pass (bounds memory).

        Returns:
            ``(B, embed_dim)`` float32 on the CPU.
        """
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        out = []
        for chunk in images.split(batch_size):
            if crop == "center":
                chunk = center_square(chunk)
            pixels = preprocess_clip_image(chunk.to(self.device, torch.float32), self.vision.config.image_size)
            out.append(F.normalize(self.vision(pixels.to(self.dtype)).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``len(texts)`` captions -> ``(len(texts), embed_dim)`` unit-norm float32 embeddings on the CPU."""
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(list(texts), context_length=self.text.config.context_length).to(self.device)
        return F.normalize(self.text(tokens).float(), dim=-1).cpu()

    def image_image_similarity(self, a: torch.Tensor, b: torch.Tensor, *, crop: str = "squash") -> torch.Tensor:
        """Cosine of the embeddings of ``a[i]`` and ``b[i]``: two ``(N, 3, H, W)`` batches in [-1, 1] -> ``(N,)``."""
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"expected two batches of one length, got {a.shape[0]} and {b.shape[0]}")
        return (self.embed_images(a, crop=crop) * self.embed_images(b, crop=crop)).sum(-1)

    def image_text_similarity(
        self, images: torch.Tensor, texts: str | Sequence[str], *, crop: str = "squash"
    ) -> torch.Tensor:
        """Cosine of each image with its caption: ``(N, 3, H, W)`` in [-1, 1] and one caption (for all) or ``N``
        -> ``(N,)``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) not in (1, images.shape[0]):
            raise ValueError(f"expected 1 or {images.shape[0]} captions, got {len(texts)}")
        return (self.embed_images(images, crop=crop) * self.embed_texts(texts)).sum(-1)


def center_square(images: torch.Tensor) -> torch.Tensor:
    """The central ``min(H, W)`` square of ``(B, C, H, W)`` images (the larger side's extra split evenly)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top : top + side, left : left + side]
