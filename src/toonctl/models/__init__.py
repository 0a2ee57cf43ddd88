"""The ToonCrafter networks, written from the official architecture (github Doubiiu/ToonCrafter).

Tensor layout, used across the whole package:

* video and latents are ``(B, C, T, H, W)``: batch, channels, frames, height, width;
* 2-D layers see frames folded into the batch, batch-major: ``(B*T, C, H, W)`` with row ``b*T + t``.
  ``fold_frames`` and ``unfold_frames`` do every such fold;
* pixels are in ``[-1, 1]``; latents are in model space (already multiplied by ``scale_factor``)
  everywhere outside the autoencoder.

Module trees keep the official names wherever our structure is the official one, so a checkpoint
loads by stripping the component prefix (see ``toonctl.convert.tooncrafter``).
"""

from __future__ import annotations

import torch


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B*T, C, H, W)``, batch-major."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*T, C, H, W) -> (B, C, T, H, W)``; the inverse of ``fold_frames``."""
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"batch {bt} is not a multiple of num_frames={num_frames}")
    return x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
