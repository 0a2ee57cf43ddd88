"""The objective's draws and dropout masks, and the UNet's training switches (dropout, gradient checkpointing)."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import load_tiny_pipe, tiny_batch, tiny_draws

from conftest import COMPONENT_TOL, assert_rel_close


@pytest.fixture(scope="module")
def pipe():
    pipe = load_tiny_pipe()
    pipe.unet.requires_grad_(True)
    pipe.image_proj.requires_grad_(True)
    return pipe


def test_draws_are_seeded_and_shaped():
    from toonctl.training.objective import TrainingDraws

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return TrainingDraws.draw(batch_size=3, num_frames=5, latent_hw=(4, 8), generator=gen, num_timesteps=10)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.posterior_noise.shape == (3, 5, 4, 4, 8) and a.noise.shape == (3, 4, 5, 4, 8)
    assert a.t.dtype == torch.int64 and 0 <= a.t.min() and a.t.max() < 10
    assert 0 <= a.random_num.min() and a.random_num.max() < 1
    for name in ("random_num", "t", "posterior_noise", "noise"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.noise, c.noise)


def test_cfg_dropout_bands():
    from toonctl.training.objective import cfg_dropout_masks

    r = torch.tensor([0.0, 0.049, 0.05, 0.099, 0.1, 0.149, 0.15, 0.9])
    drop_text, drop_image = cfg_dropout_masks(r, 0.05)
    assert drop_text.tolist() == [True, True, True, True, False, False, False, False]
    assert drop_image.tolist() == [False, False, True, True, True, True, False, False]


def test_bad_draws_are_refused(pipe):
    from toonctl.training.objective import interpolation_loss

    batch = tiny_batch()
    draws = tiny_draws(tiny_batch(frames=5))
    with pytest.raises(ValueError, match="posterior_noise"):
        interpolation_loss(pipe, batch, draws)


def test_loss_is_differentiable_into_unet_and_resampler_only(pipe):
    from toonctl.training.objective import interpolation_loss

    batch = tiny_batch()
    out = interpolation_loss(pipe, batch, tiny_draws(batch))
    assert out.context.shape == (1, 77 + 256, pipe.config.unet.context_dim)
    assert out.loss.requires_grad and out.context.requires_grad
    assert not out.z.requires_grad and not out.c_concat.requires_grad
    assert torch.equal(out.c_concat[:, :, 1:-1], torch.zeros_like(out.c_concat[:, :, 1:-1]))
    out.loss.backward()
    assert pipe.image_proj.latents.grad is not None and pipe.unet.out[2].weight.grad is not None
    assert all(p.grad is None for p in pipe.vae.parameters())
    pipe.unet.zero_grad(set_to_none=True)
    pipe.image_proj.zero_grad(set_to_none=True)


def _loss_and_grads(pipe, batch, draws, seed=0):
    from toonctl.training.objective import interpolation_loss

    torch.manual_seed(seed)  # the dropout masks
    out = interpolation_loss(pipe, batch, draws)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in pipe.unet.named_parameters()}
    pipe.unet.zero_grad(set_to_none=True)
    pipe.image_proj.zero_grad(set_to_none=True)
    return out.model_output.detach(), grads


def test_dropout_is_an_option_that_keeps_the_keys(pipe):
    batch = tiny_batch()
    draws = tiny_draws(batch)
    keys = list(pipe.unet.state_dict())
    eval_out, _ = _loss_and_grads(pipe, batch, draws)
    try:
        pipe.unet.train()
        train_no_dropout, _ = _loss_and_grads(pipe, batch, draws)  # dropout off: train mode is eval mode
        pipe.unet.set_dropout(0.1)
        assert list(pipe.unet.state_dict()) == keys
        with_dropout, _ = _loss_and_grads(pipe, batch, draws)
        pipe.unet.eval()
        eval_with_dropout_set, _ = _loss_and_grads(pipe, batch, draws)
    finally:
        pipe.unet.set_dropout(0.0)
        pipe.unet.eval()
    assert torch.equal(train_no_dropout, eval_out)
    assert not torch.allclose(with_dropout, eval_out, atol=1e-4)
    assert torch.equal(eval_with_dropout_set, eval_out)  # eval mode ignores it


def test_gradient_checkpointing_changes_nothing(pipe):
    batch = tiny_batch()
    draws = tiny_draws(batch)
    pipe.unet.train()
    pipe.unet.set_dropout(0.1)  # the recomputation must replay the same dropout masks
    try:
        plain_out, plain_grads = _loss_and_grads(pipe, batch, draws)
        pipe.unet.set_gradient_checkpointing(True)
        ckpt_out, ckpt_grads = _loss_and_grads(pipe, batch, draws)
    finally:
        pipe.unet.set_gradient_checkpointing(False)
        pipe.unet.set_dropout(0.0)
        pipe.unet.eval()
    assert torch.equal(ckpt_out, plain_out)
    for key, grad in plain_grads.items():
        assert_rel_close(ckpt_grads[key], grad, COMPONENT_TOL * 1e-2, key)


def test_cached_posteriors_give_the_same_loss(pipe):
    from toonctl.training.objective import TrainingBatch, encode_posterior, interpolation_loss

    batch = tiny_batch()
    draws = tiny_draws(batch)
    cached = TrainingBatch(
        video=batch.video, prompts=batch.prompts, fs=batch.fs, posterior=encode_posterior(pipe, batch.video)
    )
    with torch.no_grad():
        assert torch.equal(interpolation_loss(pipe, cached, draws).loss, interpolation_loss(pipe, batch, draws).loss)
