"""Noise schedules of ToonCrafter (``lvdm/models/ddpm3d.py::register_schedule``, ``utils_diffusion.py``).

The released checkpoint stores the schedule buffers (float32), and the pipeline uses those; the
functions here rebuild the same values (float64, cast to float32 like the official code) for configs
without stored buffers and for tests.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

TIMESTEP_SPACINGS = ("uniform_trailing", "uniform")


def make_betas(linear_start: float, linear_end: float, num_timesteps: int = 1000) -> np.ndarray:
    """The "scaled linear" schedule: ``linspace(sqrt(start), sqrt(end), n) ** 2`` in float64."""
    return np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1: shift sqrt(alpha_bar) so its last value is 0, keep the first."""
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def dynamic_rescale_array(base_scale: float, turning_step: int, num_timesteps: int = 1000) -> np.ndarray:
    """``scale_arr``: a ramp from 1 to ``base_scale`` over ``turning_step`` steps, then constant."""
    return np.concatenate([np.linspace(1.0, base_scale, turning_step), np.full(num_timesteps, base_scale)])


class ScheduleConfig(Protocol):
    """The schedule's settings (``models.configs.DiffusionConfig`` has them; the sampler needs no model code)."""

    timesteps: int
    linear_start: float
    linear_end: float
    rescale_betas_zero_snr: bool
    use_dynamic_rescale: bool
    base_scale: float
    turning_step: int


def make_schedule_buffers(config: ScheduleConfig) -> dict[str, torch.Tensor]:
    """Every schedule buffer the sampler reads, as the official model registers them (float32)."""
    betas = make_betas(config.linear_start, config.linear_end, config.timesteps)
    if config.rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    abar = np.cumprod(1.0 - betas)
    buffers = {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": np.append(1.0, abar[:-1]),
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
    }
    if config.use_dynamic_rescale:
        buffers["scale_arr"] = dynamic_rescale_array(config.base_scale, config.turning_step, config.timesteps)
    return {name: torch.tensor(value, dtype=torch.float32) for name, value in buffers.items()}


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, spacing: str = "uniform_trailing") -> np.ndarray:
    """DDIM timesteps in ascending order (``make_ddim_timesteps``).

    ``uniform_trailing`` (what ToonCrafter uses) ends at the last training step: 50 steps give
    19, 39, ..., 999. ``uniform`` (the official argparse default) gives 1, 21, ..., 981 and never
    reaches the zero-SNR step; it is kept only for comparisons.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    if spacing == "uniform_trailing":
        # The official ``np.arange(1000, 0, -stride)`` sometimes returns one value too many (rounding of
        # the float stride: 62 of 1..1000 counts, e.g. 61 steps give 62 with t = -1, which wraps to
        # t = 999 when indexing); the first num_steps values are the intended ones.
        stride = num_train_timesteps / num_steps
        trailing = np.round(np.arange(num_train_timesteps, 0, -stride))[:num_steps]
        return np.flip(trailing).astype(np.int64) - 1
    if spacing == "uniform":
        return np.arange(0, num_train_timesteps, num_train_timesteps // num_steps, dtype=np.int64) + 1
    raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}")
