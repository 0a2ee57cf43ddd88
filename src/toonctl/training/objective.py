"""The official interpolation training objective: one loss for a batch of clips, every random draw injectable.

Reimplements the training step of DynamiCrafter-interp (``lvdm/models/ddpm3d.py`` of Doubiiu/DynamiCrafter
c453369: ``LatentVisualDiffusion.get_batch_input`` in interp mode, ``shared_step`` and ``p_losses``), the
code ToonCrafter's toon rectification learning fine-tunes with:

1. every frame VAE-encoded on its own to a posterior *sample*, ``z = scale_factor * (mean + std * noise)``;
2. ``c_concat`` = ``z`` at frames 0 and T-1, zeros between (never dropped);
3. classifier-free-guidance dropout from one uniform draw ``r`` per sample: the text becomes the embedding
   of ``""`` when ``r < 2p``; the frame-0 pixels become 0 (before CLIP preprocessing) when ``p <= r < 3p``;
4. ``context`` = text tokens (77) followed by Resampler(ViT(frame 0)) (256 tokens);
5. dynamic rescale ``x_start = z * scale_arr[t]``, forward diffusion on the checkpoint's schedule buffers,
   v target ``sqrt(abar_t) * noise - sqrt(1 - abar_t) * x_start``;
6. loss = the batch mean of the per-sample MSE over ``(C, T, h, w)``; no timestep weighting.

The frozen towers (VAE, both CLIPs) run under ``torch.no_grad``; the Resampler and the UNet carry
gradients. Facts and sources: ``training-spec.md`` §1.4-1.5 of the project's reference docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_UNCOND_PROB = 0.05  # the official config's ``uncond_prob``


@dataclass
class TrainingBatch:
    """One batch of training clips.

    Attributes:
        video: ``(B, 3, T, H, W)`` float in [-1, 1]; H and W multiples of the model's latent factor.
        prompts: B captions ("" allowed).
        fs: ``(B,)`` int64, the frame-rate condition: the clip's frame rate after striding (source fps //
            frame stride; the official configs use ``fps_condition_type: fps``).
        hints: ``(B, 1, T, H, W)`` sketches in [0, 1] (white lines on black), sketch objective only.
        hint_mask: ``(B, T)`` bool, the frames that carry a sketch.
        posterior: optional cached VAE posteriors ``(mean, std)``, each ``(B, T, 4, h, w)`` (``encode_posterior``);
            when given the VAE is not run (latent caching). ``video`` is still needed for the CLIP image.
    """

    video: torch.Tensor
    prompts: list[str]
    fs: torch.Tensor
    hints: torch.Tensor | None = None
    hint_mask: torch.Tensor | None = None
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.video.ndim != 5 or self.video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, T, H, W), got {tuple(self.video.shape)}")
        b = self.video.shape[0]
        if len(self.prompts) != b:
            raise ValueError(f"{len(self.prompts)} prompts for a batch of {b} clips")
        if tuple(self.fs.shape) != (b,):
            raise ValueError(f"fs must be ({b},), got {tuple(self.fs.shape)}")

    @property
    def batch_size(self) -> int:
        return self.video.shape[0]

    @property
    def num_frames(self) -> int:
        return self.video.shape[2]


@dataclass
class TrainingDraws:
    """Every random draw of one training step (injectable, like ``InterpolationNoise`` for sampling).

    Attributes:
        random_num: ``(B,)`` float in [0, 1): the per-sample CFG-dropout draw.
        t: ``(B,)`` int64 in [0, num_timesteps): the diffusion timestep of each sample.
        posterior_noise: ``(B, T, 4, h, w)``: the noise of each frame's VAE posterior sample.
        noise: ``(B, 4, T, h, w)``: the diffusion noise.
    """

    random_num: torch.Tensor
    t: torch.Tensor
    posterior_noise: torch.Tensor
    noise: torch.Tensor

    @classmethod
    def draw(
        cls,
        *,
        batch_size: int,
        num_frames: int,
        latent_hw: tuple[int, int],
        generator: torch.Generator | None = None,
        num_timesteps: int = 1000,
        latent_channels: int = 4,
        device: torch.device | str = "cpu",
    ) -> TrainingDraws:
        """Draw everything from ``generator`` in the official order (posterior noise frame by frame, then
        ``random_num``, ``t``, the diffusion noise); the draws happen on the generator's device and the
        tensors are moved to ``device``."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        h, w = latent_hw
        b, t, c = batch_size, num_frames, latent_channels
        posterior_noise = torch.randn((b, t, c, h, w), generator=generator, device=gen_device)
        random_num = torch.rand((b,), generator=generator, device=gen_device)
        timesteps = torch.randint(0, num_timesteps, (b,), generator=generator, device=gen_device)
        noise = torch.randn((b, c, t, h, w), generator=generator, device=gen_device)
        return cls(
            random_num=random_num.to(device),
            t=timesteps.to(device),
            posterior_noise=posterior_noise.to(device),
            noise=noise.to(device),
        )


@dataclass
class InterpolationLoss:
    """The loss of one step and every intermediate tensor (all on the UNet's device).

    Attributes:
        loss: scalar, the mean of ``loss_per_sample`` (differentiable).
        loss_per_sample: ``(B,)`` MSE of the v prediction over ``(C, T, h, w)``.
        z: ``(B, 4, T, h, w)`` scaled posterior samples.
        c_concat: ``(B, 4, T, h, w)`` ``z`` at frames 0 and T-1, zeros between.
        context: ``(B, 77 + 256, C)`` text tokens, then image tokens (differentiable through the Resampler).
        x_start: ``z * scale_arr[t]``.
        x_noisy: ``sqrt(abar_t) * x_start + sqrt(1 - abar_t) * noise``.
        target: v, ``sqrt(abar_t) * noise - sqrt(1 - abar_t) * x_start``.
        model_output: the UNet's v prediction.
    """

    loss: torch.Tensor
    loss_per_sample: torch.Tensor
    z: torch.Tensor
    c_concat: torch.Tensor
    context: torch.Tensor
    x_start: torch.Tensor
    x_noisy: torch.Tensor
    target: torch.Tensor
    model_output: torch.Tensor


def interpolation_loss(
    pipe,
    batch: TrainingBatch,
    draws: TrainingDraws,
    *,
    uncond_prob: float = DEFAULT_UNCOND_PROB,
    control=None,
) -> InterpolationLoss:
    """The official interpolation training loss of ``batch`` under ``draws``.

    Args:
        pipe: an ``InterpolationPipeline`` (its unet, vae, text_encoder, image_encoder, image_proj, tokenizer,
            schedule, config). ``pipe.unet`` / ``pipe.image_proj`` may be wrapped (DDP, peft): they are
            called, never reached into.
        batch: the clips, captions and fs.
        draws: every random draw of the step (``TrainingDraws.draw``).
        uncond_prob: p of the CFG dropout (text dropped when r < 2p, frame-0 pixels when p <= r < 3p).
        control: an optional ``ControlStage`` ``(x_noisy, t, context) -> residuals`` whose residuals are
            added in the UNet (the sketch objective trains through it).

    Returns:
        The loss and the intermediate tensors (``InterpolationLoss``).
    """
    unet_device = _device_of(pipe.unet)
    video = batch.video
    b, _, num_frames = video.shape[:3]
    _check_draws(draws, b, num_frames)

    # 1-2. latents (frozen VAE, one frame at a time) and the key-frame concat condition
    mean, std = batch.posterior if batch.posterior is not None else encode_posterior(pipe, video)
    z = sample_latents(mean.to(unet_device), std.to(unet_device), draws.posterior_noise, pipe.config.vae.scale_factor)
    c_concat = keyframe_concat(z)

    # 3-4. context: text (or "") ‖ Resampler(ViT(frame 0, or zeros))
    random_num = draws.random_num.to(unet_device)
    context = conditioning_context(pipe, batch.prompts, video[:, :, 0], random_num, uncond_prob=uncond_prob)
    context = context.to(unet_device)

    # 5. dynamic rescale, forward diffusion, v target
    t = draws.t.to(unet_device, torch.long)
    schedule = {k: v.to(unet_device, torch.float32) for k, v in pipe.schedule.items()}
    x_start = z * _at(schedule["scale_arr"], t) if "scale_arr" in schedule else z
    noise = draws.noise.to(unet_device, torch.float32)
    sqrt_abar = _at(schedule["sqrt_alphas_cumprod"], t)
    sqrt_one_minus_abar = _at(schedule["sqrt_one_minus_alphas_cumprod"], t)
    x_noisy = sqrt_abar * x_start + sqrt_one_minus_abar * noise
    target = sqrt_abar * noise - sqrt_one_minus_abar * x_start

    # 6. the UNet (plus an optional control stage) and the loss
    residuals = None if control is None else control(x_noisy, t, context)
    x_in = torch.cat([x_noisy, c_concat], dim=1)  # (B, 8, T, h, w)
    fs = batch.fs.to(unet_device, torch.long)
    model_output = pipe.unet(x_in, t, context, fs=fs, control_residuals=residuals)
    loss_per_sample = (model_output.float() - target).pow(2).flatten(1).mean(dim=1)
    return InterpolationLoss(
        loss=loss_per_sample.mean(),
        loss_per_sample=loss_per_sample,
        z=z,
        c_concat=c_concat,
        context=context,
        x_start=x_start,
        x_noisy=x_noisy,
        target=target,
        model_output=model_output,
    )


# -- the pieces (public: the other objectives and latent caching reuse them) ---------------------------


@torch.no_grad()
def encode_posterior(pipe, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen VAE's posterior of every frame, encoded one frame at a time as officially (``perframe_ae``).

    Args:
        video: ``(B, 3, T, H, W)`` in [-1, 1].

    Returns:
        ``(mean, std)``, each ``(B, T, 4, h, w)`` float32 in VAE space (not yet times ``scale_factor``).
    """
    vae = pipe.vae
    device, dtype = _device_of(vae), _dtype_of(vae)
    b, _, t = video.shape[:3]
    frames = video.transpose(1, 2).reshape(b * t, 3, *video.shape[-2:])  # (B*T, 3, H, W), batch-major
    means, stds = [], []
    for index in range(b * t):
        posterior = vae.encode(frames[index : index + 1].to(device, dtype))
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    mean = torch.cat(means).reshape(b, t, *means[0].shape[1:])
    std = torch.cat(stds).reshape(b, t, *stds[0].shape[1:])
    return mean, std


def sample_latents(
    mean: torch.Tensor, std: torch.Tensor, posterior_noise: torch.Tensor, scale_factor: float
) -> torch.Tensor:
    """Posterior samples in model space: ``(B, T, 4, h, w)`` moments and noise -> ``(B, 4, T, h, w)``
    ``scale_factor * (mean + std * noise)``."""
    noise = posterior_noise.to(mean.device, torch.float32)
    return (scale_factor * (mean + std * noise)).transpose(1, 2).contiguous()


def encode_video_latents(pipe, video: torch.Tensor, posterior_noise: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, 4, T, h, w)`` scaled posterior samples (no gradient)."""
    mean, std = encode_posterior(pipe, video)
    return sample_latents(mean, std, posterior_noise, pipe.config.vae.scale_factor)


def keyframe_concat(z: torch.Tensor) -> torch.Tensor:
    """``c_concat`` for interpolation: ``z`` at frames 0 and T-1, zeros between. ``(B, C, T, h, w)``."""
    c_concat = torch.zeros_like(z)
    c_concat[:, :, 0] = z[:, :, 0]
    c_concat[:, :, -1] = z[:, :, -1]
    return c_concat


def cfg_dropout_masks(random_num: torch.Tensor, uncond_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(drop_text, drop_image)``, each ``(B,)`` bool: text when ``r < 2p``, image when ``p <= r < 3p``."""
    drop_text = random_num < 2 * uncond_prob
    drop_image = (random_num >= uncond_prob) & (random_num < 3 * uncond_prob)
    return drop_text, drop_image


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Prompts -> ``(N, 77, C)`` float32 with the frozen text tower (no gradient)."""
    encoder = pipe.text_encoder
    tokens = pipe.tokenizer(list(prompts)).to(_device_of(encoder))
    return encoder(tokens).float()


def text_context(pipe, prompts: Sequence[str], drop_text: torch.Tensor) -> torch.Tensor:
    """``(B, 77, C)``: each prompt's embedding, or the embedding of ``""`` where ``drop_text``."""
    embeddings = encode_prompts(pipe, [*prompts, ""])
    text, empty = embeddings[:-1], embeddings[-1:]
    mask = drop_text.to(text.device).view(-1, 1, 1)
    return torch.where(mask, empty.expand_as(text), text)


@torch.no_grad()
def encode_clip_image(pipe, images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] -> ``(B, 257, width)`` ViT tokens of the frozen image tower (no gradient)."""
    from toonctl.models.clip_encoders import preprocess_clip_image

    encoder = pipe.image_encoder
    pixels = preprocess_clip_image(images.to(_device_of(encoder), torch.float32))
    return encoder(pixels.to(_dtype_of(encoder))).float()


def image_context(pipe, first_frames: torch.Tensor, drop_image: torch.Tensor) -> torch.Tensor:
    """``(B, 256, C)``: Resampler(ViT(frame 0)), with the frame's pixels zeroed where ``drop_image``.

    The ViT runs without gradient; the Resampler (``pipe.image_proj``, possibly wrapped) with.
    """
    keep = (~drop_image).to(first_frames.device, first_frames.dtype).view(-1, 1, 1, 1)
    tokens = encode_clip_image(pipe, first_frames * keep)
    proj = pipe.image_proj
    return proj(tokens.to(_device_of(proj), _dtype_of(proj))).float()


def conditioning_context(
    pipe, prompts: Sequence[str], first_frames: torch.Tensor, random_num: torch.Tensor, *, uncond_prob: float
) -> torch.Tensor:
    """The UNet's context ``(B, 77 + 256, C)`` with the official CFG dropout applied."""
    drop_text, drop_image = cfg_dropout_masks(random_num.float(), uncond_prob)
    text = text_context(pipe, prompts, drop_text.cpu())
    image = image_context(pipe, first_frames, drop_image.cpu())
    return torch.cat([text.to(image.device), image], dim=1)


# -- helpers -----------------------------------------------------------------------------------------------


def _at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped ``(B, 1, 1, 1, 1)`` to broadcast over ``(B, C, T, h, w)``."""
    return values[t].view(-1, 1, 1, 1, 1)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _check_draws(draws: TrainingDraws, batch_size: int, num_frames: int) -> None:
    if tuple(draws.random_num.shape) != (batch_size,) or tuple(draws.t.shape) != (batch_size,):
        raise ValueError(
            f"random_num and t must be ({batch_size},), got {tuple(draws.random_num.shape)}, {tuple(draws.t.shape)}"
        )
    if draws.posterior_noise.ndim != 5 or tuple(draws.posterior_noise.shape[:2]) != (batch_size, num_frames):
        raise ValueError(
            f"posterior_noise must be ({batch_size}, {num_frames}, 4, h, w), got {tuple(draws.posterior_noise.shape)}"
        )
    if draws.noise.ndim != 5 or draws.noise.shape[0] != batch_size or draws.noise.shape[2] != num_frames:
        raise ValueError(f"noise must be ({batch_size}, 4, {num_frames}, h, w), got {tuple(draws.noise.shape)}")
