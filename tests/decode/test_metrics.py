"""PSNR, SSIM and LPIPS on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from toonctl.metrics import (
    ALEXNET_FILE,
    LPIPS,
    LPIPS_ENV,
    LPIPS_LINEAR_FILE,
    SSIM_K1,
    SSIM_K2,
    find_lpips_weights,
    mean_finite,
    psnr,
    ssim,
    to_unit,
)


def _pattern_pair(amp: float, h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth colour image and the same plus a deterministic high-frequency pattern, (1, 3, h, w) float64."""
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    a = torch.stack([0.5 + 0.4 * torch.sin(6 * j / w + c) * torch.cos(4 * i / h) for c in range(3)])
    b = a + torch.stack([amp * torch.sin(1.7 * i + 2.3 * j + 0.5 * c) for c in range(3)])
    return a[None], b.clamp(0, 1)[None]


def test_identical_frames():
    x = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_psnr_of_an_exact_error_and_of_gaussian_noise():
    x = torch.full((1, 3, 64, 64), 0.5)
    sign = torch.ones(64, 64)
    sign[::2] = -1
    assert psnr(x, x + 0.1 * sign).item() == pytest.approx(20.0, abs=1e-5)  # MSE = 0.01 exactly
    # Gaussian noise of sigma 0.05 (no clipping at 0.5 +- 10 sigma): MSE ~ sigma^2, PSNR ~ 26.02 dB
    noise = torch.randn(4, 3, 256, 256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    value = psnr(torch.full_like(noise, 0.5), 0.5 + 0.05 * noise)
    assert value.mean().item() == pytest.approx(-10 * math.log10(0.05**2), abs=0.05)


def test_ssim_of_constant_images_has_the_closed_form():
    # Flat windows have zero variance: only the luminance term (2ab + C1) / (a^2 + b^2 + C1) remains.
    a, b = 0.3, 0.6
    flat = {"size": (1, 1, 20, 20), "dtype": torch.float64}
    value = ssim(torch.full(fill_value=a, **flat), torch.full(fill_value=b, **flat)).item()
    c1 = SSIM_K1**2
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)
    assert SSIM_K2 == 0.03


@pytest.mark.parametrize(
    ("amp", "expected"),
    # scikit-image 0.26 structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=1.0, channel_axis=0) on these very arrays
    [(0.1, 0.40873002630865857), (0.3, 0.07544172683256882)],
)
def test_ssim_matches_the_reference_implementation(amp, expected):
    a, b = _pattern_pair(amp)
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-12)
    assert ssim(b, a).item() == pytest.approx(expected, abs=1e-12)  # symmetric
    a, b = _pattern_pair(0.2)
    assert ssim(a[:, :1], b[:, :1]).item() == pytest.approx(0.15121369140628715, abs=1e-12)  # one channel


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="at least 11 pixels"):
        ssim(torch.zeros(1, 3, 10, 64), torch.zeros(1, 3, 10, 64))
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))


def test_to_unit_and_mean_finite():
    assert to_unit(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert mean_finite([1.0, 3.0]) == 2.0 and math.isinf(mean_finite([1.0, math.inf])) and math.isnan(mean_finite([]))


def test_lpips_is_unavailable_without_local_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv(LPIPS_ENV, str(tmp_path / "lpips"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    found = find_lpips_weights()
    if found.available:  # an lpips package with its weights, plus a cached AlexNet, happen to be installed
        pytest.skip("LPIPS weights are installed on this machine")
    assert not found.available and "never downloaded" in found.reason and LPIPS_LINEAR_FILE in found.reason


def test_lpips_loads_local_files_and_measures_a_distance(tmp_path, monkeypatch):
    """Random weights in the two official layouts: loading is strict, identical images are at distance 0."""
    torch.manual_seed(0)
    model = LPIPS()
    backbone = {f"features.{i}.{p}": t for i, conv in model.features.items() for p, t in conv.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # torchvision's file holds the classifier too
    heads = {f"lin{i}.model.1.weight": lin.weight.abs() for i, lin in enumerate(model.lins)}
    folder = tmp_path / "lpips"
    folder.mkdir()
    torch.save(backbone, folder / ALEXNET_FILE)
    torch.save(heads, folder / LPIPS_LINEAR_FILE)
    monkeypatch.setenv(LPIPS_ENV, str(folder))
    found = find_lpips_weights()
    assert found.available and found.alexnet == folder / ALEXNET_FILE
    lpips = LPIPS.from_files(found.alexnet, found.linear)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6)
    distance = lpips(x, y)
    assert (distance > 0).all() and torch.allclose(distance, lpips(y, x), rtol=1e-5)
