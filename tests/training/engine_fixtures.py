"""Helpers shared by the engine tests: synthetic clips and a toy objective (no model to load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from toonctl.io.video import write_frames
from toonctl.training.engine import BaseObjective, LossResult


def moving_square_clip(path: Path, count: int = 10, size=(32, 64), fps: float = 12, shift: int = 0) -> Path:
    """A clip of a dark square moving right over a light background (mp4, png folder or gif by suffix)."""
    h, w = size
    frames = np.full((count, h, w, 3), 230, np.uint8)
    for i in range(count):
        x = (shift + 3 * i) % (w - 8)
        frames[i, h // 4 : h // 4 + 8, x : x + 8] = (40, 60, 200)
    return write_frames(frames, path, fps=fps)


class ToyObjective(BaseObjective):
    """A linear map of each clip's mean colour, fitted to a fixed target with noise from the step generator."""

    name = "toy"
    default_learning_rate = 0.05

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))
        self.frozen = nn.Linear(3, 3)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def set_module(self, name: str, module: nn.Module) -> None:
        self.model = module

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"frozen": self.frozen}

    def compute_loss(self, batch, generator) -> LossResult:
        colour = batch.video.float().mean(dim=(2, 3, 4))  # (B, 3)
        noise = torch.randn(colour.shape, generator=generator).to(colour.device)
        prediction = self.model(self.frozen(colour) + 0.1 * noise)
        target = torch.tensor([0.5, -0.5, 0.25], device=colour.device) + 0.01 * batch.fs.float()[:, None]
        loss = (prediction - target).pow(2).mean()
        return LossResult(loss, {"abs": float((prediction - target).detach().abs().mean())})

    def export(self, destination: Path, base_weights: Path) -> Path:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(destination))
        return destination
