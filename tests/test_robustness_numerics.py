"""No NaN at any step count, and a non-finite value anywhere in a run stops it with the stage named (issue 9.1)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_A
from toonctl.errors import NonFiniteError
from toonctl.models.configs import DiffusionConfig
from toonctl.samplers.ddim import make_ddim_schedule, sample_ddim
from toonctl.samplers.schedules import ddim_timesteps, make_schedule_buffers

# Step counts at which the official arithmetic (unclamped sqrt) gives NaN with eta = 1.
FORMERLY_NAN = [7, 11, 14, 15, 20, 25, 33, 34, 35, 37, 38, 39, 61, 62, 63, 64]


@pytest.fixture(scope="module")
def buffers():
    return make_schedule_buffers(DiffusionConfig())


def test_the_unclamped_term_is_negative_at_the_formerly_failing_counts(buffers):
    """The finding itself: 1 - a_prev - sigma^2 rounds below zero in float32 at exactly these counts."""
    negative = []
    for n in range(1, 101):
        s = make_ddim_schedule(buffers, n, eta=1.0)
        if bool((1.0 - s.alphas_prev - s.sigmas**2 < 0).any()):
            negative.append(n)
    assert negative == FORMERLY_NAN


def test_every_step_count_gives_that_many_distinct_timesteps():
    """The official arange gives 62 at --steps 61 (the extra one t = -1, i.e. t = 999 again): not here."""
    for n in range(1, 1001):
        t = ddim_timesteps(n).tolist()
        assert len(t) == n and t[-1] == 999 and t[0] >= 0 and len(set(t)) == n, n


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_step_count_gives_finite_coefficients_and_update(buffers, eta):
    x = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    for n in range(1, 1001):
        s = make_ddim_schedule(buffers, n, eta=eta)
        coefs = torch.stack([s.alphas, s.alphas_prev, s.sigmas, s.x0_rescale, s.direction_coefs()])
        assert bool(torch.isfinite(coefs).all()), f"{n} steps, eta {eta}: non-finite schedule"
        # One update of the first (noisiest) step with a random v: finite.
        i = 0
        eps = s.sqrt_alphas[i] * x + s.sqrt_one_minus_alphas[i] * x
        x0 = (s.sqrt_alphas[i] * x - s.sqrt_one_minus_alphas[i] * x) * s.x0_rescale[i]
        x_prev = s.alphas_prev[i].sqrt() * x0 + s.direction_coefs()[i] * eps + s.sigmas[i] * x
        assert bool(torch.isfinite(x_prev).all()), f"{n} steps, eta {eta}: non-finite update"


def test_clamp_changes_nothing_where_the_official_result_is_finite(buffers):
    for n in (1, 8, 16, 50, 100):
        s = make_ddim_schedule(buffers, n, eta=1.0)
        assert torch.equal(s.direction_coefs(), (1.0 - s.alphas_prev - s.sigmas**2).sqrt())


@pytest.fixture(scope="module")
def pipe():
    from toonctl.pipelines.interpolate import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")


def _keys() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("steps", [7, 11, 20])
def test_formerly_failing_step_counts_give_finite_video(pipe, steps):
    start, end = _keys()
    out = pipe(start, end, "a ball", steps=steps, num_frames=4, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(out.video).all())
    assert out.video.abs().max() > 0.05  # not black


def test_nan_in_sampling_names_the_step(buffers):
    schedule = make_ddim_schedule(buffers, 4, eta=0.0)
    calls = []

    def denoiser(x, t):
        calls.append(int(t[0]))
        return torch.full_like(x, float("nan")) if len(calls) == 2 else torch.zeros_like(x)

    with pytest.raises(NonFiniteError, match=r"sampling step 2 of 4 \(t=749\)"):
        sample_ddim(denoiser, torch.randn(1, 4, 2, 2, 2), schedule, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2  # stopped at once


def test_nan_in_an_encoder_or_the_decode_names_the_stage(pipe, monkeypatch):
    start, end = _keys()
    run = dict(steps=1, num_frames=4, generator=torch.Generator().manual_seed(0))
    with monkeypatch.context() as m:
        m.setattr(pipe, "encode_text", lambda prompts: torch.full((2, 77, 8), float("nan")))
        with pytest.raises(NonFiniteError, match="after text encoding"):
            pipe(start, end, **run)
    with monkeypatch.context() as m:
        m.setattr(pipe, "decode_latents", lambda latents, ref, **kw: torch.full((1, 3, 4, 32, 32), float("inf")))
        with pytest.raises(NonFiniteError, match="after decoding the frames"):
            pipe(start, end, **run)
