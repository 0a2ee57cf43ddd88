"""Helpers of the training tests: the tiny-a pipeline and a small synthetic clip."""

from __future__ import annotations

import copy
import functools

import torch

from conftest import TINY_A


def load_tiny_pipe():
    """A fresh tiny-a ``InterpolationPipeline`` (float32, CPU); tests may train it."""
    from toonctl.pipelines.interpolate import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")


@functools.cache
def _tiny_unet():
    from toonctl.weights import load_weights

    return load_weights(TINY_A / "model.safetensors", TINY_A / "config.yaml", components=["unet"])["unet"]


def load_tiny_unet():
    """A fresh copy of the tiny-a UNet alone (float32, CPU)."""
    return copy.deepcopy(_tiny_unet())


def moving_square_clip(batch: int = 1, frames: int = 8, size: tuple[int, int] = (32, 64)) -> torch.Tensor:
    """``(batch, 3, frames, H, W)`` in [-1, 1]: a bright square sliding right over a dark ground."""
    h, w = size
    video = torch.full((batch, 3, frames, h, w), -0.6)
    side = h // 2
    for i in range(frames):
        x = i * (w - side) // max(frames - 1, 1)
        video[:, 0, i, h // 4 : h // 4 + side, x : x + side] = 0.9
        video[:, 1, i, h // 4 : h // 4 + side, x : x + side] = 0.3
    return video


def tiny_batch(frames: int = 4, batch: int = 1):
    from toonctl.training.objective import TrainingBatch

    prompts = ["a red square slides right", "a cartoon fox"][:batch] + [""] * max(0, batch - 2)
    return TrainingBatch(video=moving_square_clip(batch, frames), prompts=prompts, fs=torch.full((batch,), 8))


def tiny_draws(batch, seed: int = 0):
    from toonctl.training.objective import TrainingDraws

    h, w = batch.video.shape[-2] // 8, batch.video.shape[-1] // 8
    generator = torch.Generator().manual_seed(seed)
    return TrainingDraws.draw(
        batch_size=batch.batch_size, num_frames=batch.num_frames, latent_hw=(h, w), generator=generator
    )
