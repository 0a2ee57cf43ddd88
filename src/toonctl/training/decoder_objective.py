"""Training the dual-reference video decoder (ToonCrafter paper §3.3; training-spec §3).

No official training code exists; the released ``autoencoder.py`` keeps the data flow of
``AutoencoderKL_Dualref._forward`` and the two-optimizer GAN step, which this follows:

* **Frozen**: the VAE encoder and ``quant_conv``. Only the decoder trains.
* **Initialisation**: the released decoder as it is (continue), or ``image_decoder_init``: a plain 2-D
  (Stable Diffusion KL-f8) decoder's weights for the 2-D part, and the dual-reference parts reset so that the
  decoder starts as exactly that image decoder -- Combiner convs zero, the fusion cross-attention's
  ``to_out`` zero, every ``time_stack``'s last conv zero (the branch then returns its input), ``mix_factor``
  0 (``sigmoid(0) = 0.5``, and ``0.5 x + 0.5 x`` is ``x`` exactly in floating point), ``time_mix_conv`` the
  identity (1 at the centre tap of each channel's own kernel, 0 elsewhere, no bias). The released code's
  default init of ``time_mix_conv`` is not an identity (training-spec §3.2); starting from one is the only
  way "initialised from the image decoder" holds exactly.
* **Inputs**: real clips. Every frame is encoded on its own (``perframe_ae``) to a posterior *sample*; the
  references are the encoder hidden states of the clip's first and last frame.
* **Loss**: ``L1 + 0.1 LPIPS`` (LPIPS from local weights, ``toonctl.metrics.find_lpips_weights``; without
  them the objective says so once and uses ``L1 + (1 - SSIM)``), plus from ``disc_start`` on the adaptive
  adversarial term of ``discriminator.py``. The discriminator has its own optimizer and loss
  (``discriminator_loss``). Defaults lr 4.5e-6, batch 16 (the paper).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.models import fold_frames, unfold_frames
from toonctl.training.discriminator import (
    DEFAULT_DISC_WEIGHT,
    PatchDiscriminator,
    adaptive_weight,
    adopt_weight,
    generator_loss,
    hinge_d_loss,
)
from toonctl.training.engine import BaseObjective, LossResult

DEFAULT_LR = 4.5e-6
DEFAULT_BATCH_SIZE = 16
DEFAULT_STEPS = 60_000
DEFAULT_DISC_START = 10_000  # unpublished officially (training-spec Q3); a sixth of the paper's 60K steps
LPIPS_WEIGHT = 0.1
SSIM_WEIGHT = 1.0
DECODER_PREFIX = "first_stage_model.decoder."
INIT_CHOICES = ("continue", "image-decoder")


# --------------------------------------------------------------------------------------------- initialisation


def is_dual_reference_key(key: str) -> bool:
    """True for the decoder tensors a plain 2-D decoder lacks (keys relative to the decoder)."""
    return (
        key.startswith("attn_refinement.")
        or ".time_stack." in key
        or key.endswith("mix_factor")
        or (key.startswith("conv_out.time_mix_conv."))
    )


@torch.no_grad()
def reset_dual_reference_parts(decoder: nn.Module) -> list[str]:
    """Reset the dual-reference parts of a ``VideoDecoder`` in place so that it decodes as its 2-D part.

    Returns:
        the keys that were reset (see the module docstring for the values).
    """
    from toonctl.models.autoencoder_dualref import Combiner, FusionCrossAttention, TemporalResBlock, VideoResBlock

    for module in decoder.modules():
        if isinstance(module, Combiner):
            module.conv.weight.zero_()
            module.conv.bias.zero_()
        elif isinstance(module, FusionCrossAttention):
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()
        elif isinstance(module, TemporalResBlock):
            module.out_layers[3].weight.zero_()
            module.out_layers[3].bias.zero_()
        elif isinstance(module, VideoResBlock):
            module.mix_factor.zero_()
    mix = decoder.conv_out.time_mix_conv
    mix.weight.zero_()
    centre = mix.kernel_size[0] // 2
    for channel in range(mix.out_channels):
        mix.weight[channel, channel, centre] = 1.0
    mix.bias.zero_()
    return [k for k in decoder.state_dict() if is_dual_reference_key(k)]


@torch.no_grad()
def image_decoder_init(decoder: nn.Module, image_decoder_state: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Start ``decoder`` (a ``VideoDecoder``) as a plain image decoder, in place.

    Args:
        decoder: the dual-reference decoder.
        image_decoder_state: a 2-D KL-f8 decoder's tensors, keys relative to the decoder (``conv_in.weight``,
            ``mid.block_1.norm1.weight``, ``up.0.block.0.conv1.weight``, ...); None keeps the decoder's own
            2-D weights (e.g. the released decoder's).

    Returns:
        the 2-D keys copied from ``image_decoder_state`` (empty when it is None).

    Raises:
        ValueError: a 2-D key missing from ``image_decoder_state`` or of another shape (all listed).
    """
    copied = []
    if image_decoder_state is not None:
        own = decoder.state_dict()
        wanted = [k for k in own if not is_dual_reference_key(k)]
        bad = [k for k in wanted if k not in image_decoder_state or image_decoder_state[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"the image decoder lacks or differs in {len(bad)} tensors: {', '.join(bad[:6])}")
        for key in wanted:
            own[key].copy_(image_decoder_state[key])
            copied.append(key)
    reset_dual_reference_parts(decoder)
    return copied


def read_image_decoder(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain KL-f8 decoder's tensors from a checkpoint: keys ``first_stage_model.decoder.*`` (an LDM / SD
    model) or ``decoder.*`` (a bare VAE such as ``vae-ft-mse-840000``), returned relative to the decoder.

    Raises:
        CheckpointError: unreadable, or no decoder keys (the diffusers layout is not read).
    """
    from toonctl.convert.tooncrafter import read_state_dict
    from toonctl.errors import CheckpointError

    state = read_state_dict(path)
    for prefix in (DECODER_PREFIX, "decoder."):
        keys = [k for k in state if k.startswith(prefix)]
        if keys:
            return {k[len(prefix) :]: state[k] for k in keys}
    raise CheckpointError(
        f"{path}: no decoder.* or first_stage_model.decoder.* keys",
        hint="give an LDM/SD checkpoint or a bare KL-f8 VAE file (the diffusers layout is not supported)",
    )


# --------------------------------------------------------------------------------------------- losses


@dataclass
class DecoderDraws:
    """Every random draw of one decoder step: ``posterior_noise`` ``(B, T, 4, h, w)``."""

    posterior_noise: torch.Tensor

    @classmethod
    def draw(
        cls,
        *,
        batch_size: int,
        num_frames: int,
        latent_hw: tuple[int, int],
        generator: torch.Generator | None = None,
        latent_channels: int = 4,
        device: torch.device | str = "cpu",
    ) -> DecoderDraws:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        shape = (batch_size, num_frames, latent_channels, *latent_hw)
        return cls(torch.randn(shape, generator=generator, device=gen_device).to(device))


class PerceptualLoss(nn.Module):
    """``0.1 LPIPS`` from local weights, else ``1 - SSIM`` (said once on stderr): ``(N, 3, H, W)`` pairs in
    [-1, 1] -> a scalar. ``kind`` is ``"lpips"`` or ``"ssim"``."""

    def __init__(self, lpips_dir: str | Path | None = None, *, use_lpips: bool = True, quiet: bool = False) -> None:
        super().__init__()
        from toonctl.metrics import LPIPS, find_lpips_weights

        self.lpips = None
        found = find_lpips_weights(lpips_dir) if use_lpips else None
        if found is not None and found.available:
            self.lpips = LPIPS.from_files(found.alexnet, found.linear)
        elif not quiet:
            reason = found.reason if found is not None else "LPIPS turned off"
            print(f"decoder training: no LPIPS ({reason}); using L1 + (1 - SSIM) instead", file=sys.stderr)
        self.kind = "lpips" if self.lpips is not None else "ssim"
        self.weight = LPIPS_WEIGHT if self.lpips is not None else SSIM_WEIGHT

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.lpips is not None:
            return self.lpips.distance(recon, target).mean()
        from toonctl.metrics import ssim

        # [0, 1] without clamping, so the gradient reaches pixels that overshoot
        return (1 - ssim((recon + 1) / 2, (target + 1) / 2)).mean().float()


@dataclass
class DecoderLoss:
    """One step: ``loss`` (scalar), ``logs`` (l1, perceptual, g_loss, d_weight, disc_factor), ``recon``
    ``(B, 3, T, H, W)`` and ``target``."""

    loss: torch.Tensor
    logs: dict[str, float]
    recon: torch.Tensor
    target: torch.Tensor


# --------------------------------------------------------------------------------------------- objective


class DecoderObjective(BaseObjective):
    """The ``decoder`` objective of the trainer (see the module docstring).

    Args:
        vae: the ``AutoencoderKLDualRef``; its encoder and ``quant_conv`` are frozen, its decoder trains.
        perceptual: the perceptual term (``PerceptualLoss()``: LPIPS if found, else SSIM).
        discriminator: the PatchGAN (None: a fresh ``PatchDiscriminator``).
        adversarial: False trains without any discriminator (L1 + perceptual only).
        disc_start: the first step with the adversarial term.
        disc_weight: the factor on the adaptive weight.
        encode_batch: frames per encoder call (memory bound; the encoder is per-frame anyway).
        validation_clips: held-out ``(1, 3, T, H, W)`` clips for ``validate`` (decode-bench's metrics).
    """

    name = "decoder"
    default_learning_rate = DEFAULT_LR

    def __init__(
        self,
        vae: nn.Module,
        *,
        perceptual: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        adversarial: bool = True,
        disc_start: int = DEFAULT_DISC_START,
        disc_weight: float = DEFAULT_DISC_WEIGHT,
        encode_batch: int = 16,
        validation_clips: list[torch.Tensor] | None = None,
    ) -> None:
        self.vae = vae
        self.decoder = vae.decoder
        self.perceptual = perceptual if perceptual is not None else PerceptualLoss()
        self.discriminator = (discriminator or PatchDiscriminator()) if adversarial else None
        self.disc_start = disc_start
        self.disc_weight = disc_weight
        self.encode_batch = encode_batch
        self.validation_clips = list(validation_clips or [])
        self._last: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (id of the video, target, recon)
        for module in self.frozen_modules().values():
            module.requires_grad_(False)
        self.decoder.requires_grad_(True)

    # -- the engine's interface

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"decoder": self.decoder}

    def set_module(self, name: str, module: nn.Module) -> None:
        if name == "decoder":
            self.decoder = module
        elif name == "discriminator":
            self.discriminator = module
        else:
            raise KeyError(f"the decoder objective has no trainable module {name!r}")

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.vae.encoder, "quant_conv": self.vae.quant_conv, "perceptual": self.perceptual}

    def compute_loss(self, batch, generator: torch.Generator | None) -> LossResult:
        result = self.step_loss(batch, generator, step=self.training_step)
        return LossResult(result.loss, result.logs)

    def discriminator_loss(self, batch, generator: torch.Generator | None, step: int) -> LossResult:
        loss, logs = self.discriminator_step_loss(batch, generator, step=step)
        self.training_step = step + 1  # the engine calls this at the end of step ``step``
        return LossResult(loss, logs)

    @property
    def training_step(self) -> int:
        """The step the next ``compute_loss`` belongs to (kept in the discriminator: checkpointed with it)."""
        if self.discriminator is None:
            return 0
        return int(_unwrap(self.discriminator).training_step)

    @training_step.setter
    def training_step(self, step: int) -> None:
        if self.discriminator is not None:
            _unwrap(self.discriminator).training_step.fill_(step)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the decoder's activations in the backward pass, block by block (the bottleneck, each
        resolution's blocks and upsampling, each reference refinement): outputs and gradients unchanged, the
        activations of a 16-frame full-resolution decode no longer all kept."""
        from toonctl.models.autoencoder_dualref import Combiner, FusionCrossAttention, UpLevel, VideoMidBlock
        from toonctl.models.layers import Upsample

        for module in _unwrap(self.decoder).modules():
            if isinstance(module, (VideoMidBlock, UpLevel, Upsample, Combiner, FusionCrossAttention)):
                _checkpoint_forward(module)

    def summary(self) -> str:
        decoder = _unwrap(self.decoder)
        trained = sum(p.numel() for p in decoder.parameters() if p.requires_grad)
        disc = sum(p.numel() for p in _unwrap(self.discriminator).parameters()) if self.discriminator else 0
        frozen = sum(p.numel() for p in self.vae.encoder.parameters()) + self.vae.quant_conv.weight.numel()
        return (
            f"decoder: {trained:,} trainable parameters (the decoder) + {disc:,} (discriminator); "
            f"frozen encoder {frozen:,}; perceptual term: {self.perceptual.kind}"
        )

    def validate(self, step: int, folder: Path) -> list[Path]:
        """decode-bench's PSNR/SSIM (LPIPS when in use) of the held-out clips, posterior mean, as JSON."""
        import json

        from toonctl.metrics import psnr, ssim, to_unit

        if not self.validation_clips:
            return []
        rows = []
        for index, clip in enumerate(self.validation_clips):
            zero = DecoderDraws(torch.zeros(clip.shape[0], clip.shape[2], 1, 1, 1))  # the posterior mean
            z, references = self.encode(clip, zero)
            recon = fold_frames(self.reconstruct(z, references)).cpu()
            target = fold_frames(clip.float()).cpu()
            row = {"clip": index, "psnr": psnr(to_unit(recon), to_unit(target)).mean().item()}
            row["ssim"] = ssim(to_unit(recon), to_unit(target)).mean().item()
            if self.perceptual.lpips is not None:
                lpips = self.perceptual.lpips
                row["lpips"] = lpips(recon.to(lpips.shift.device), target.to(lpips.shift.device)).mean().item()
            rows.append(row)
        means = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "clip"}
        from toonctl.io.atomic import write_text_atomic

        path = folder / f"step-{step:07d}.json"
        write_text_atomic(path, json.dumps({"step": step, "mean": means, "clips": rows}, indent=1))
        return [path]

    # -- the data flow

    @torch.no_grad()
    def encode(self, video: torch.Tensor, draws: DecoderDraws) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every frame to a posterior sample, and the first and last frames' hidden states.

        Args:
            video: ``(B, 3, T, H, W)`` in [-1, 1].

        Returns:
            ``z`` ``(B, 4, T, h, w)`` in VAE space and the ``L + 1`` references ``(B, C_i, 2, H_i, W_i)``.
        """
        vae = self.vae
        param = next(vae.encoder.parameters())
        b, _, t = video.shape[:3]
        frames = fold_frames(video).to(param.device, param.dtype)  # (B*T, 3, H, W), batch-major
        means, stds, refs = [], [], []
        for chunk in frames.split(self.encode_batch):
            posterior = vae.encode(chunk)
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
            refs.append(list(posterior.hidden_states))
        mean = torch.cat(means).reshape(b, t, *means[0].shape[1:])
        std = torch.cat(stds).reshape(b, t, *stds[0].shape[1:])
        z = (mean + std * draws.posterior_noise.to(mean.device, torch.float32)).transpose(1, 2).contiguous()
        keys = [i for frame in range(b) for i in (frame * t, frame * t + t - 1)]  # first and last of each clip
        references = []
        for level in range(len(refs[0])):
            states = torch.cat([chunk[level] for chunk in refs])  # (B*T, C, H, W)
            picked = states[keys]  # (2B, C, H, W): clip 0 first, clip 0 last, clip 1 first, ...
            references.append(unfold_frames(picked, 2))  # (B, C, 2, H, W)
        return z, references

    def reconstruct(self, z: torch.Tensor, references: list[torch.Tensor]) -> torch.Tensor:
        """The (trainable, possibly wrapped) decoder on ``z`` ``(B, 4, T, h, w)`` -> ``(B, 3, T, H, W)``."""
        dtype = next(self.decoder.parameters()).dtype
        refs = [r.to(dtype) for r in references]
        return self.decoder(fold_frames(z).to(dtype), refs, z.shape[2]).float()

    def _last_layer(self) -> torch.Tensor:
        return _unwrap(self.decoder).conv_out.weight  # the official get_last_layer(): decoder.conv_out.weight

    def step_loss(
        self, batch, generator: torch.Generator | None = None, *, step: int = 0, draws: DecoderDraws | None = None
    ) -> DecoderLoss:
        """The decoder's loss on one batch at training ``step`` (draws from ``generator`` unless given)."""
        video = batch.video
        b, _, t, height, width = video.shape
        factor = 2 ** (len(self.vae.config.ch_mult) - 1)
        if draws is None:
            draws = DecoderDraws.draw(
                batch_size=b, num_frames=t, latent_hw=(height // factor, width // factor),
                latent_channels=self.vae.config.embed_dim, generator=generator,
            )  # fmt: skip
        z, references = self.encode(video, draws)
        recon = self.reconstruct(z, references)
        target = video.to(recon.device, torch.float32)
        l1 = (recon - target).abs().mean()
        perceptual = self.perceptual(fold_frames(recon), fold_frames(target))
        rec_loss = l1 + self.perceptual.weight * perceptual
        disc_factor = adopt_weight(step, self.disc_start)
        logs = {"l1": l1.item(), self.perceptual.kind: perceptual.item(), "disc_factor": disc_factor}
        loss = rec_loss
        if self.discriminator is not None:
            # The bare module (no DDP hooks) with its parameters off the graph: the discriminator's gradient
            # comes from discriminator_loss only.
            critic = _unwrap(self.discriminator).requires_grad_(False)
            g_loss = generator_loss(critic(fold_frames(recon)))
            critic.requires_grad_(True)
            if disc_factor > 0 and torch.is_grad_enabled():
                d_weight = adaptive_weight(rec_loss, g_loss, self._last_layer(), self.disc_weight)
            else:
                d_weight = torch.zeros((), device=recon.device)
            loss = rec_loss + d_weight * disc_factor * g_loss
            logs.update(g_loss=g_loss.item(), d_weight=float(d_weight))
        self._last = (id(batch.video), target, recon.detach())
        return DecoderLoss(loss=loss, logs=logs, recon=recon, target=target)

    def discriminator_step_loss(self, batch, generator: torch.Generator | None = None, *, step: int = 0):
        """The discriminator's hinge loss on the batch's frames and the last reconstruction of that batch
        (recomputed without gradient when the last ``step_loss`` was on another batch). 0 before
        ``disc_start`` (times 0, so the graph still reaches every parameter)."""
        if self._last is not None and self._last[0] == id(batch.video):
            _, target, recon = self._last
        else:
            with torch.no_grad():
                result = self.step_loss(batch, generator, step=step)
            target, recon = result.target, result.recon.detach()
        logits_real = self.discriminator(fold_frames(target).detach())
        logits_fake = self.discriminator(fold_frames(recon).detach())
        d_loss = hinge_d_loss(logits_real, logits_fake)
        factor = adopt_weight(step, self.disc_start)
        logs = {
            "d_loss": d_loss.item(),
            "logits_real": logits_real.mean().item(),
            "logits_fake": logits_fake.mean().item(),
        }
        return d_loss * factor, logs

    def export(self, destination: str | Path, base_weights: str | Path) -> Path:
        """The base checkpoint with its decoder replaced by the trained one (official layout)."""
        return export_decoder(self.decoder, base_weights, destination)


def _checkpoint_forward(module: nn.Module) -> None:
    """Make ``module`` recompute its forward in the backward pass when gradients are on (idempotent)."""
    if getattr(module, "_toonctl_checkpointed", False):
        return
    forward = module.forward

    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    module.forward = checkpointed
    module._toonctl_checkpointed = True


def _unwrap(module: nn.Module) -> nn.Module:
    from toonctl.training.sketch_objective import unwrap

    return unwrap(module)


def decoder_replacements(decoder: nn.Module) -> dict[str, torch.Tensor]:
    """``{official key: fp32 tensor}`` of the decoder (``first_stage_model.decoder.*``)."""
    state = _unwrap(decoder).state_dict()
    return {DECODER_PREFIX + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def export_decoder(decoder: nn.Module, base_weights: str | Path, destination: str | Path) -> Path:
    """Write ``base_weights`` with the decoder's tensors replaced, as a full official-layout checkpoint."""
    from toonctl.training.export import export_checkpoint

    return export_checkpoint(base_weights, decoder_replacements(decoder), destination)


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DecoderSettings:
    """What ``toonctl train decoder`` trains (the run's ``objective_settings``; ``from_settings`` rebuilds it).

    Attributes:
        weights: the official-layout checkpoint whose VAE is trained (and exported into).
        config: its model config (None: found beside it).
        init: ``continue`` (the released decoder) or ``image-decoder`` (``image_decoder_init``).
        image_decoder: with ``image-decoder``: a file holding a plain KL-f8 decoder (``read_image_decoder``);
            None takes the 2-D part of the checkpoint's own decoder.
        perceptual: ``lpips`` or ``ssim`` (decided when the run starts, so a resume cannot switch silently).
        lpips_dir: where the LPIPS weights are (None: ``find_lpips_weights``' places).
        adversarial: train with the discriminator.
        disc_start, disc_weight: when the adversarial term starts, and its factor.
    """

    weights: str
    config: str | None = None
    init: str = "continue"
    image_decoder: str | None = None
    perceptual: str = "lpips"
    lpips_dir: str | None = None
    adversarial: bool = True
    disc_start: int = DEFAULT_DISC_START
    disc_weight: float = DEFAULT_DISC_WEIGHT

    def __post_init__(self) -> None:
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        if self.perceptual not in ("lpips", "ssim"):
            raise ValueError(f"perceptual must be lpips or ssim, got {self.perceptual!r}")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def perceptual_kind(lpips_dir: str | Path | None = None) -> tuple[str, str]:
    """``("lpips", "")`` when the LPIPS weights are on disk, else ``("ssim", why not)``."""
    from toonctl.metrics import find_lpips_weights

    found = find_lpips_weights(lpips_dir)
    return ("lpips", "") if found.available else ("ssim", found.reason)


def load_objective(
    settings: DecoderSettings, validation_clips: list[torch.Tensor] | None = None, *, for_export: bool = False
) -> DecoderObjective:
    """Load the VAE of ``settings.weights`` (fp32, on the CPU: the engine places it) and build the objective
    (``for_export``: without the perceptual network, which export does not need).

    Raises:
        CheckpointError: unreadable weights or image decoder. ToonctlError: LPIPS asked for but not found.
    """
    from toonctl.errors import ToonctlError
    from toonctl.weights import config_for, load_weights

    config = config_for(Path(settings.weights), settings.config)
    vae = load_weights(settings.weights, config, components=["vae"], dtype=torch.float32)["vae"]
    if settings.init == "image-decoder":
        source = read_image_decoder(settings.image_decoder) if settings.image_decoder else None
        try:
            image_decoder_init(vae.decoder, source)
        except ValueError as exc:
            from toonctl.errors import CheckpointMismatchError

            raise CheckpointMismatchError(f"{settings.image_decoder}: {exc}") from None
    use_lpips = settings.perceptual == "lpips" and not for_export
    if use_lpips:
        kind, reason = perceptual_kind(settings.lpips_dir)
        if kind != "lpips":
            raise ToonctlError(f"this run uses LPIPS but {reason}", hint="pass --lpips-dir, or start a new run")
    perceptual = PerceptualLoss(settings.lpips_dir, use_lpips=use_lpips, quiet=True)
    return DecoderObjective(
        vae,
        perceptual=perceptual,
        adversarial=settings.adversarial,
        disc_start=settings.disc_start,
        disc_weight=settings.disc_weight,
        validation_clips=validation_clips,
    )


def from_settings(values: dict) -> DecoderObjective:
    """The objective of a run's ``objective_settings`` (``toonctl train export``)."""
    return load_objective(DecoderSettings(**values), for_export=True)
