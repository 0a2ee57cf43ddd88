"""Stand-ins for the optional files ``toonctl eval`` reads: a tiny I3D TorchScript module and RIFE weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TinyI3D(nn.Module):
    """Takes ``(B, 3, T, 224, 224)`` like the real I3D and returns ``(B, 6)`` features (a random projection of
    per-channel, per-frame-third means)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(9, 6)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if x.shape[-1] != 224 or x.shape[-2] != 224:
            raise ValueError("I3D expects 224x224 frames")
        thirds = torch.stack([chunk.mean(dim=(2, 3, 4)) for chunk in x.chunk(3, dim=2)], dim=-1)  # (B, 3, 3)
        return self.proj(thirds.flatten(1))


def save_tiny_i3d(path: Path) -> Path:
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():  # TorchScript is deprecated; the community's I3D file is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyI3D()).save(str(path))
    return path


def save_tiny_rife(path: Path) -> Path:
    from toonctl.evaluation.rife import IFNet

    torch.manual_seed(0)
    torch.save({f"module.{k}": v * 0.1 for k, v in IFNet().state_dict().items()}, path)
    return path
