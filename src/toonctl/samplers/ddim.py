"""DDIM for ToonCrafter's v-prediction model (``lvdm/models/samplers/ddim.py::DDIMSampler``).

Why our own step and not diffusers' ``DDIMScheduler``: the schedule parts agree (``trailing`` spacing,
``set_alpha_to_one=False``, v-prediction and zero-SNR give the same timesteps and the same
alpha-bar values; ``tests/samplers/test_schedules.py`` checks it against diffusers), but ToonCrafter's
*dynamic rescale* multiplies the predicted x0 -- and only x0, not the noise estimate -- by
``scale_arr[t_prev] / scale_arr[t]`` before the update, and no diffusers scheduler has a hook for
that. The official code also converts v to eps/x0 with the checkpoint's float32
``sqrt_alphas_cumprod`` buffers gathered at integer t, and builds sigma in float64 before the float32
cast; following it step for step keeps parity exact.

One deliberate difference: the noise-direction coefficient ``sqrt(1 - a_prev - sigma^2)`` is taken of
the term clamped at zero. Under the zero-terminal-SNR schedule alpha_bar(999) = 0, so at the first
step with eta = 1 that term is 0 in exact arithmetic but can round to about -6e-8 in float32, whose
square root is NaN: the official code (same arithmetic) returns black video at 7, 11, 20, ... steps.
Wherever the official result is finite, the clamped one is identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from toonctl.numerics import check_finite
from toonctl.samplers.schedules import ddim_timesteps

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoiser(x, t) -> v``: the (guided) model output for the state ``x`` at integer timesteps ``t``."""


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step constants of one sampling run, in the order the loop uses them (t descending).

    Attributes (each of length ``num_steps``):
        timesteps: integer DDPM step t (999, 979, ... for 50 steps).
        alphas: alpha_bar(t), float32.
        alphas_prev: alpha_bar(t_prev), float32 (alpha_bar(0), not 1, after the last step).
        sigmas: eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)), float32.
        x0_rescale: scale_arr[t_prev] / scale_arr[t] (dynamic rescale), float32; ones if off.
        sqrt_alphas, sqrt_one_minus_alphas: the checkpoint buffers gathered at t (v -> eps/x0).
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor
    x0_rescale: torch.Tensor
    sqrt_alphas: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)

    def direction_coefs(self) -> torch.Tensor:
        """``sqrt(max(1 - a_prev - sigma^2, 0))`` per step, float32: the weight of eps in the update."""
        return direction_coef(self.alphas_prev, self.sigmas)


def direction_coef(a_prev: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The DDIM noise-direction weight ``sqrt(1 - a_prev - sigma^2)``, the term clamped at zero.

    Unclamped, the float32 term is about -6e-8 at the first step of some step counts (alpha_bar(999)
    is 0 under zero-terminal SNR and sigma^2 = 1 - a_prev exactly), and its square root is NaN.
    """
    return (1.0 - a_prev - sigma**2).clamp_min(0.0).sqrt()


def make_ddim_schedule(
    buffers: dict[str, torch.Tensor],
    num_steps: int,
    *,
    eta: float = 1.0,
    spacing: str = "uniform_trailing",
) -> DDIMSchedule:
    """Build the per-step constants from the model's schedule buffers (``make_schedule``).

    Args:
        buffers: ``alphas_cumprod``, ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod`` and,
            for dynamic rescale, ``scale_arr`` (float32, as stored in the checkpoint).
        num_steps: number of DDIM steps.
        eta: 0 for deterministic DDIM, 1 for the official setting.
        spacing: ``uniform_trailing`` (official run.sh) or ``uniform``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    abar = buffers["alphas_cumprod"].detach().cpu().float()
    steps = torch.from_numpy(ddim_timesteps(num_steps, len(abar), spacing))  # ascending
    a = abar[steps]  # float32, as the official gather
    a_prev = torch.cat([abar[:1], abar[steps[:-1]]]).double()
    # Official: float64 numpy math on float32 inputs, where (1 - a) is formed in float32 first.
    sigmas = eta * torch.sqrt((1 - a_prev) / (1 - a).double() * (1 - a.double() / a_prev))
    if "scale_arr" in buffers:
        scale = buffers["scale_arr"].detach().cpu().float()[steps]
        rescale = torch.cat([scale[:1], scale[:-1]]) / scale
    else:
        rescale = torch.ones(len(steps))
    order = torch.arange(len(steps) - 1, -1, -1)  # the loop runs from the last (noisiest) step down
    return DDIMSchedule(
        timesteps=steps[order],
        alphas=a[order],
        alphas_prev=a_prev.float()[order],
        sigmas=sigmas.float()[order],
        x0_rescale=rescale[order],
        sqrt_alphas=buffers["sqrt_alphas_cumprod"].detach().cpu().float()[steps][order],
        sqrt_one_minus_alphas=buffers["sqrt_one_minus_alphas_cumprod"].detach().cpu().float()[steps][order],
    )


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    schedule: DDIMSchedule,
    *,
    noise: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x`` (x_T) and return x_0's last iterate.

    Notation (DDIM paper, eqs. 12 and 16):

    ==================  ==========================================
    ``a``, ``a_prev``   alpha_bar_t, alpha_bar_{t-1}
    ``v``               the model's v-prediction (after guidance)
    ``eps``             epsilon_theta(x_t)
    ``x0``              "predicted x_0" (after dynamic rescale)
    ``sigma``           sigma_t(eta)
    ``z``               fresh Gaussian noise, drawn every step (even for eta = 0)
    ==================  ==========================================

    Args:
        denoiser: ``(x, t) -> v`` with x ``(B, C, T, h, w)`` float32 and t ``(B,)`` long.
        x: x_T, ``(B, C, T, h, w)``; the sampler state stays float32.
        schedule: from ``make_ddim_schedule``.
        noise: one tensor shaped like ``x`` per step, to replay a run; drawn from ``generator`` if None.
        generator: source of the per-step noise when ``noise`` is None.
        callback: called after each step with ``{"i", "t", "x", "v", "eps", "x0_raw", "x0", "x_prev"}``.
    """
    if noise is not None and len(noise) != len(schedule):
        raise ValueError(f"got {len(noise)} step noises for {len(schedule)} steps")
    x = x.float()
    batch = x.shape[0]
    for i in range(len(schedule)):
        t = schedule.timesteps[i]
        ts = torch.full((batch,), int(t), device=x.device, dtype=torch.long)
        v = denoiser(x, ts).float()
        sqrt_a, sqrt_1ma = schedule.sqrt_alphas[i].item(), schedule.sqrt_one_minus_alphas[i].item()
        a_prev = schedule.alphas_prev[i].to(x.device)
        sigma = schedule.sigmas[i].to(x.device)
        # 1. v -> eps and x0 (the checkpoint's float32 buffers at integer t)
        eps = _scalar(sqrt_a, x) * v + _scalar(sqrt_1ma, x) * x
        x0_raw = _scalar(sqrt_a, x) * x - _scalar(sqrt_1ma, x) * v
        # 2. dynamic rescale: undo the training-time shrink of x0, x0 only
        x0 = x0_raw * schedule.x0_rescale[i].to(x.device)
        # 3. DDIM update (eq. 12): x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z
        z = noise[i].to(x.device, torch.float32) if noise is not None else _randn_like(x, generator)
        x_prev = a_prev.sqrt() * x0 + direction_coef(a_prev, sigma) * eps + sigma * z
        check_finite(x_prev, f"sampling step {i + 1} of {len(schedule)} (t={int(t)})")
        if callback is not None:
            callback({"i": i, "t": int(t), "x": x, "v": v, "eps": eps, "x0_raw": x0_raw, "x0": x0, "x_prev": x_prev})
        x = x_prev
    return x


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device)
