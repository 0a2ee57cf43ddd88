"""Image-quality metrics for comparing decoded frames with the originals: PSNR, SSIM and, from local weights, LPIPS.

* PSNR per frame, ``10 log10(1 / MSE)`` on [0, 1] images.
* SSIM is the Gaussian-window index of Wang et al. 2004 (IEEE TIP 13(4)) as their reference ``ssim_index.m``
  computes it: an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, population (co)variances, the
  mean over the *valid* window positions (no padding), per channel, then averaged over channels. This is
  scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1.0, channel_axis=...)``. It is written here in torch, rather than imported, because
  scikit-image brings SciPy and runs on the CPU only, and torchmetrics 1.x averages over a reflect-padded
  border instead of the valid window positions (about 0.002 higher or lower on small frames).
* LPIPS (Zhang et al. 2018, v0.1, AlexNet backbone) runs only when both weight files are already on disk
  (``find_lpips_weights``); nothing is ever downloaded. torchvision is not needed: the five AlexNet
  convolutions are built here and load torchvision's ``alexnet`` state dict.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

LPIPS_ENV = "TOONCTL_LPIPS_DIR"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet
LPIPS_LINEAR_FILE = "alex.pth"  # the LPIPS v0.1 linear heads (the `lpips` package's weights/v0.1/alex.pth)


def to_unit(video: torch.Tensor) -> torch.Tensor:
    """Frames in [-1, 1] (any float dtype) -> float64 in [0, 1], clamped as when saving."""
    return ((video.double().clamp(-1, 1) + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB (``inf`` for identical images).

    Args:
        x, y: ``(N, C, H, W)`` images with values in ``[0, data_range]``.

    Returns:
        ``(N,)`` float64.
    """
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)  # mse 0 -> inf


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, Gaussian window; see the module docstring).

    Args:
        x, y: ``(N, C, H, W)`` images with values in ``[0, data_range]``, at least 11 pixels on each side.

    Returns:
        ``(N,)`` float64, 1 for identical images.
    """
    _check_pair(x, y)
    radius = int(3.5 * SSIM_SIGMA + 0.5)  # 5: the 11-tap window of the reference implementation
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise ValueError(f"SSIM needs images of at least {2 * radius + 1} pixels a side, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    g = torch.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    channels = x.shape[1]
    kernel_h = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)  # (C, 1, 11, 1), one filter per channel
    kernel_w = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian over valid positions only
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)  # mean over channels and positions (equal counts per channel)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


# ---------------------------------------------------------------------------------------------------- LPIPS


@dataclass(frozen=True)
class LpipsWeights:
    """Where LPIPS would load from: both paths, or None and the reason (``available`` says which)."""

    alexnet: Path | None
    linear: Path | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.alexnet is not None and self.linear is not None


def find_lpips_weights(directory: str | Path | None = None) -> LpipsWeights:
    """Look for the two LPIPS files on disk, never on the network.

    Looked at, in order: ``directory``; ``$TOONCTL_LPIPS_DIR``; ``<weights folder>/lpips``; then torch's hub
    cache for the AlexNet file and an installed ``lpips`` package for the linear heads.
    """
    from toonctl.weights import weights_dir

    folders = [Path(p) for p in (directory, os.environ.get(LPIPS_ENV)) if p] + [weights_dir() / "lpips"]
    alexnet_places = [f / ALEXNET_FILE for f in folders] + [Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE]
    linear_places = [f / LPIPS_LINEAR_FILE for f in folders]
    spec = importlib.util.find_spec("lpips")  # finds, does not import (the package needs torchvision)
    if spec is not None and spec.origin:
        linear_places.append(Path(spec.origin).parent / "weights" / "v0.1" / LPIPS_LINEAR_FILE)
    alexnet = next((p for p in alexnet_places if p.is_file()), None)
    linear = next((p for p in linear_places if p.is_file()), None)
    missing = [name for name, found in ((ALEXNET_FILE, alexnet), (LPIPS_LINEAR_FILE, linear)) if found is None]
    reason = ""
    if missing:
        where = ", ".join(str(f) for f in folders)
        reason = (
            f"no {' or '.join(missing)} on disk (looked in {where}, torch's hub cache and an installed lpips "
            "package); LPIPS weights are never downloaded"
        )
    return LpipsWeights(alexnet, linear, reason)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet backbone: a learned, weighted distance between normalised deep features.

    The five ReLU outputs of AlexNet's convolutions are unit-normalised along channels, their squared
    differences weighted per channel by a 1x1 conv without bias (``lin0`` .. ``lin4``), averaged over
    positions and summed over layers. Inputs are RGB in [-1, 1], shifted and scaled first as the original.
    """

    CHANNELS = (64, 192, 384, 256, 256)
    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self) -> None:
        super().__init__()
        # torchvision's alexnet.features indices 0, 3, 6, 8, 10 hold the convolutions
        self.features = nn.ModuleDict(
            {
                "0": nn.Conv2d(3, 64, 11, stride=4, padding=2),
                "3": nn.Conv2d(64, 192, 5, padding=2),
                "6": nn.Conv2d(192, 384, 3, padding=1),
                "8": nn.Conv2d(384, 256, 3, padding=1),
                "10": nn.Conv2d(256, 256, 3, padding=1),
            }
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_files(cls, alexnet: str | Path, linear: str | Path) -> LPIPS:
        """Load torchvision's AlexNet state dict and the LPIPS linear heads (``lin{i}.model.1.weight``)."""
        model = cls()
        backbone = torch.load(alexnet, map_location="cpu", weights_only=True)
        heads = torch.load(linear, map_location="cpu", weights_only=True)
        names = [f"features.{i}.{p}" for i in model.features for p in ("weight", "bias")]
        state = {name: backbone[name] for name in names}
        state.update({f"lins.{i}.weight": heads[f"lin{i}.model.1.weight"] for i in range(len(cls.CHANNELS))})
        model.load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.shift) / self.scale
        taps = []
        for name, conv in self.features.items():
            if name in ("3", "6"):  # a 3x3 stride-2 max pool precedes conv 2 and conv 3
                h = F.max_pool2d(h, 3, stride=2)
            h = F.relu(conv(h))
            taps.append(h)
        return taps

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` pairs in [-1, 1] -> ``(N,)`` distances (0 for identical images)."""
        return self.distance(x, y)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``forward`` with gradients flowing to the inputs (a training loss); the weights stay frozen."""
        _check_pair(x, y)
        dtype = self.shift.dtype
        total = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
        for lin, fx, fy in zip(self.lins, self._taps(x.to(dtype)), self._taps(y.to(dtype)), strict=True):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def mean_finite(values: list[float]) -> float:
    """The mean, ``inf`` when any value is (PSNR of a frame decoded exactly), NaN for no values."""
    if not values:
        return math.nan
    return math.inf if any(math.isinf(v) for v in values) else sum(values) / len(values)
