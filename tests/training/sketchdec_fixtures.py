"""Shared pieces of the sketch-encoder and decoder training tests: the tiny-a pipeline and a tiny clip."""

from __future__ import annotations

import math

import torch

from conftest import TINY_A

T = 8  # frames per test clip
SIZE = (32, 64)  # pixels, the tiny model's native size (latent 4x8; its bottleneck is then 1x2)


def load_tiny_pipe():
    from toonctl.pipelines.interpolate import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")


def tiny_clip(num_frames: int = T, size=SIZE, seed: int = 0) -> torch.Tensor:
    """``(1, 3, T, H, W)`` in [-1, 1]: a bright disc moving across a gradient, with a dark outline."""
    h, w = size
    ys = torch.linspace(-1, 1, h).view(h, 1)
    xs = torch.linspace(-1, 1, w).view(1, w)
    frames = []
    for i in range(num_frames):
        cx = -0.6 + 1.2 * i / max(1, num_frames - 1)
        r = ((xs - cx) ** 2 + (ys - 0.1 * math.sin(i)) ** 2).sqrt()
        disc = (r < 0.35).float()
        ring = ((r > 0.35) & (r < 0.45)).float()
        red = 0.8 * disc - 0.9 * ring + 0.3 * xs
        green = -0.2 * disc - 0.9 * ring + 0.3 * ys
        blue = 0.5 - 0.7 * disc - 0.9 * ring + 0 * xs
        frames.append(torch.stack([red, green, blue.expand(h, w)]))
    video = torch.stack(frames, dim=1)  # (3, T, H, W)
    return video.clamp(-1, 1).unsqueeze(0)


def tiny_batch(num_frames: int = T, **fields):
    from toonctl.training.objective import TrainingBatch

    return TrainingBatch(video=tiny_clip(num_frames), prompts=["a ball"], fs=torch.tensor([10]), **fields)


def write_clips(folder, count: int = 2, frames: int = 6):
    """``count`` small mp4 clips of the disc moving (32x64, 12 fps) with captions."""
    import numpy as np

    from toonctl.io.video import write_frames

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        video = tiny_clip(frames + i, seed=i)[0]  # (3, T, H, W)
        pixels = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        write_frames(np.ascontiguousarray(pixels), folder / f"shot{i}.mp4", fps=12)
        (folder / f"shot{i}.txt").write_text("a red ball")
    return folder


def train_settings(run, **overrides):
    from toonctl.training.engine import TrainSettings

    values = dict(output_dir=run, max_steps=4, batch_size=1, effective_batch=1, checkpoint_every=2,
                  keep_checkpoints=2, log_every=1, num_workers=0, cpu=True)  # fmt: skip
    values.update(overrides)
    return TrainSettings(**values)
