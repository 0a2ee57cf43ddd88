"""Schedule buffers and DDIM constants against the official values (golden ``schedule`` / ``e2e_*``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SCHEDULE_TOL, assert_rel_close, load_golden
from toonctl.models.configs import DiffusionConfig
from toonctl.samplers.ddim import make_ddim_schedule
from toonctl.samplers.schedules import ddim_timesteps, make_schedule_buffers


def test_buffers_match_official_schedule():
    ours = make_schedule_buffers(DiffusionConfig())
    golden = load_golden("schedule")
    for name, ref in golden.items():
        assert_rel_close(ours[name], ref, SCHEDULE_TOL, name)
    # zero terminal SNR and the spec's reference values
    assert ours["alphas_cumprod"][999].item() == 0.0
    assert ours["alphas_cumprod"][0].item() == pytest.approx(0.99915, abs=1e-6)
    assert ours["alphas_cumprod"][19].item() == pytest.approx(0.981010, abs=1e-6)
    assert ours["scale_arr"][399].item() == pytest.approx(0.7, abs=1e-7)


def test_uniform_trailing_timesteps():
    assert ddim_timesteps(50).tolist() == list(range(19, 1000, 20))
    assert ddim_timesteps(4).tolist() == [249, 499, 749, 999]
    assert ddim_timesteps(50, spacing="uniform").tolist()[:2] == [1, 21]
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(4, spacing="quad")
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(0)


@pytest.mark.parametrize("name", ["e2e_T16_eta1", "e2e_T16_eta0"])
def test_ddim_constants_match_official(name):
    g = load_golden(name)
    eta = 1.0 if name.endswith("eta1") else 0.0
    sched = make_ddim_schedule(load_golden("schedule"), 4, eta=eta)
    assert sched.timesteps.tolist() == g["step_t"].tolist()
    for ours, key in [
        (sched.alphas, "step_a_t"),
        (sched.alphas_prev, "step_a_prev"),
        (sched.x0_rescale, None),
    ]:
        if key is not None:
            assert_rel_close(ours, g[key], SCHEDULE_TOL, key)
    if eta:
        assert_rel_close(sched.sigmas, g["step_sigma_t"], SCHEDULE_TOL, "sigma")
    else:
        assert torch.all(sched.sigmas == 0)
    assert_rel_close(sched.x0_rescale, g["step_prev_scale_t"] / g["step_scale_t"], SCHEDULE_TOL, "rescale")


def test_fifty_step_reference_numbers():
    sched = make_ddim_schedule(make_schedule_buffers(DiffusionConfig()), 50, eta=1.0)
    # spec §9, in loop order (index 49 first)
    sigmas = sched.sigmas.flip(0).numpy()
    np.testing.assert_allclose(
        sigmas[[0, 1, 25, 48, 49]], [0.028507, 0.100531, 0.322457, 0.878125, 0.999957], atol=2e-6
    )
    rescale = sched.x0_rescale.flip(0).numpy()
    assert rescale[0] == 1.0 and np.all(rescale[20:] == 1.0)
    np.testing.assert_allclose(rescale[[1, 19]], [1.015492, 1.021482], atol=2e-6)
    assert sched.alphas_prev[-1].item() == pytest.approx(0.99915, abs=1e-6)


def test_diffusers_ddim_scheduler_agrees_on_the_schedule():
    """diffusers' DDIMScheduler reproduces the timesteps and alpha-bars (why we still step ourselves:
    see toonctl/samplers/ddim.py)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
        set_alpha_to_one=False, clip_sample=False,
    )  # fmt: skip
    sched.set_timesteps(50)
    ours = make_ddim_schedule(make_schedule_buffers(DiffusionConfig()), 50)
    assert sched.timesteps.tolist() == ours.timesteps.tolist()
    assert_rel_close(sched.alphas_cumprod.float(), load_golden("schedule")["alphas_cumprod"], 1e-6, "alphas_cumprod")
    # one deterministic step without dynamic rescale is the same update
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    v = torch.randn_like(x)
    buffers = make_schedule_buffers(DiffusionConfig())
    del buffers["scale_arr"]
    plain = make_ddim_schedule(buffers, 50, eta=0.0)
    from toonctl.samplers.ddim import sample_ddim

    first_only = type(plain)(*(getattr(plain, f)[5:6] for f in plain.__dataclass_fields__))
    ours_out = sample_ddim(lambda x_, t_: v, x, first_only, noise=[torch.zeros_like(x)])
    ref = sched.step(v, int(first_only.timesteps[0]), x, eta=0.0).prev_sample
    assert_rel_close(ours_out, ref, 1e-5, "ddim step")
