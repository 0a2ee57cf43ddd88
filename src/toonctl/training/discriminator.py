"""The adversarial part of the decoder training: a PatchGAN discriminator, hinge losses, the adaptive weight.

ToonCrafter's paper (§3.3) adds "a discriminator loss" with an adaptive weight "following [12]" to the decoder's
L1 + LPIPS; the loss module was not released (the config says ``lossconfig: torch.nn.Identity``). This is the
standard latent-diffusion autoencoder recipe it points to (Esser et al., *Taming Transformers*, 2021; the
``LPIPSWithDiscriminator`` of ``ldm/modules/losses/contperceptual.py``):

* ``PatchDiscriminator``: Isola et al.'s PatchGAN (``NLayerDiscriminator``): a 4x4 conv of stride 2, then
  ``n_layers`` 4x4 convs with BatchNorm and LeakyReLU(0.2) (stride 2 but the last), a 4x4 conv to one logit
  per patch. Weights drawn from N(0, 0.02), BatchNorm scales from N(1, 0.02). It judges every frame on its
  own (2-D); whether the authors' was 2-D or 3-D is not known (training-spec Q3).
* hinge losses: discriminator ``(relu(1 - D(x)) + relu(1 + D(x̂))) / 2``, generator ``-D(x̂)``;
* the adaptive weight ``||∇_w L_rec|| / (||∇_w L_gen|| + 1e-4)`` at the decoder's last layer ``w``, clamped
  to [0, 1e4], detached, times ``disc_weight``;
* nothing adversarial before ``disc_start`` (both terms multiplied by 0 so the graph keeps its shape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DISC_WEIGHT = 0.5  # the LDM KL autoencoder configs' disc_weight
ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(N, 3, H, W)`` in [-1, 1] -> ``(N, 1, H', W')`` logits, one per overlapping patch.

    Args:
        in_channels: image channels.
        channels: width of the first conv (doubled per layer, at most 8x).
        n_layers: strided layers after the first (3: 70x70 patches).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        # The training step the adversarial terms are at: saved with the discriminator in every checkpoint, so
        # a resumed run knows whether the generator's adversarial term is on before its first discriminator step.
        self.register_buffer("training_step", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The PatchGAN initialisation (see the module docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, 0.02, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.02, generator=generator)
                module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss (scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss ``-mean D(x̂)`` (scalar)."""
    return -logits_fake.mean()


def adopt_weight(step: int, start: int, value: float = 1.0) -> float:
    """``value`` from step ``start`` on, 0 before."""
    return value if step >= start else 0.0


def adaptive_weight(
    rec_loss: torch.Tensor, gen_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = DEFAULT_DISC_WEIGHT
) -> torch.Tensor:
    """Esser et al.'s balance: ``disc_weight * ||∇ rec|| / (||∇ gen|| + 1e-4)`` at ``last_layer``, detached.

    Both losses must depend on ``last_layer`` through a graph that is kept (``retain_graph``).
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(gen_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gen_grad.norm() + ADAPTIVE_EPS)
    return weight.clamp(0.0, ADAPTIVE_MAX).detach() * disc_weight
