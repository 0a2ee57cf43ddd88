"""Classifier-free guidance for the v-prediction UNet (``p_sample_ddim`` + ``rescale_noise_cfg``).

``GuidedDenoiser`` is the ``denoiser(x, t) -> v`` the DDIM loop calls. It holds the conditioning that
does not change between steps (contexts, ``c_concat``, fs), so nothing is rebuilt per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass
class Conditioning:
    """What the UNet sees besides the noisy latent, for one guidance branch.

    Attributes:
        context: ``(B, 77 + image_tokens, C)`` text tokens followed by image tokens.
        concat: ``(B, 4, T, h, w)`` hybrid conditioning (key-frame latents at frames 0 and T-1).
        fs: ``(B,)`` long, the frame-stride ("fps") condition.
    """

    context: torch.Tensor
    concat: torch.Tensor
    fs: torch.Tensor


class ControlStage(Protocol):
    """A pluggable stage that steers the UNet (e.g. the sketch encoder).

    Called once per UNet call with the noisy latent ``(B, 4, T, h, w)``, the timesteps ``(B,)`` and the
    branch's context ``(B, L, C)``; returns the UNet's ``control_residuals`` (one ``(B*T, C_i, h_i, w_i)``
    tensor per skip connection plus one for the middle block), or None for no control.
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> Sequence[torch.Tensor] | None: ...


def classifier_free_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``v_uncond + scale * (v_cond - v_uncond)``."""
    return v_uncond + scale * (v_cond - v_uncond)


def rescale_guidance(v_guided: torch.Tensor, v_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, sec. 3.4) on the v output.

    Matches the per-sample std of the guided output to the conditional one (unbiased std over every
    non-batch dim), then mixes ``phi`` of that with ``1 - phi`` of the plain guided output.
    """
    dims = list(range(1, v_guided.ndim))
    ratio = v_cond.std(dim=dims, keepdim=True) / v_guided.std(dim=dims, keepdim=True)
    return phi * (v_guided * ratio) + (1 - phi) * v_guided


class GuidedDenoiser:
    """``(x, t) -> v`` with classifier-free guidance and guidance rescale.

    Args:
        unet: ``ToonUNet3D``-like module, ``unet(x_in, t, context, fs) -> v``.
        cond, uncond: the two branches; ``uncond=None`` or ``guidance_scale == 1`` runs one branch.
        guidance_scale: CFG scale (7.5 officially).
        guidance_rescale: phi of ``rescale_guidance`` (0.7 officially; 0 disables).
        batched: run both branches in one UNet call (faster) instead of two (the official way,
            lower peak memory). The two agree within float noise.
        on_branch_outputs: optional ``(v_cond, v_uncond)`` hook, for tests and diagnostics.
        control: optional ``ControlStage``; it runs in both guidance branches.
    """

    def __init__(
        self,
        unet: nn.Module,
        cond: Conditioning,
        uncond: Conditioning | None,
        *,
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.7,
        batched: bool = True,
        on_branch_outputs: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
        control: ControlStage | None = None,
    ) -> None:
        self.unet = unet
        self.control = control
        self.uncond = uncond if guidance_scale != 1.0 else None
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale
        self.batched = batched
        self.on_branch_outputs = on_branch_outputs
        self._dtype = next(unet.parameters()).dtype
        if self.uncond is not None and batched:
            # Concatenated once: nothing per step but the latent changes.
            cond = Conditioning(
                context=torch.cat([cond.context, self.uncond.context]),
                concat=torch.cat([cond.concat, self.uncond.concat]),
                fs=torch.cat([cond.fs, self.uncond.fs]),
            )
        self._branches = [cond] if self.uncond is None or batched else [cond, self.uncond]
        self._prepared: dict[int, object] = {}

    def _run(self, x: torch.Tensor, t: torch.Tensor, branch: int) -> torch.Tensor:
        c = self._branches[branch]
        if branch not in self._prepared:  # per-frame context and fs embedding: once per run, not per step
            self._prepared[branch] = self.unet.prepare_conditioning(c.context, c.fs, x.shape[2])
        x_in = torch.cat([x, c.concat.to(x.dtype)], dim=1).to(self._dtype)  # (B, 8, T, h, w)
        residuals = None if self.control is None else self.control(x, t, c.context)
        return self.unet(x_in, t, self._prepared[branch], control_residuals=residuals).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.uncond is None:
            return self._run(x, t, 0)
        if self.batched:
            v_cond, v_uncond = self._run(torch.cat([x, x]), torch.cat([t, t]), 0).chunk(2)
        else:
            v_cond = self._run(x, t, 0)
            v_uncond = self._run(x, t, 1)
        if self.on_branch_outputs is not None:
            self.on_branch_outputs(v_cond, v_uncond)
        v = classifier_free_guidance(v_cond, v_uncond, self.guidance_scale)
        if self.guidance_rescale > 0:
            v = rescale_guidance(v, v_cond, self.guidance_rescale)
        return v
