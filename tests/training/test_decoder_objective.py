"""The decoder objective on the tiny-a VAE: the image-decoder init decodes exactly as the plain per-frame
decoder, L1 falls over-fitting one clip, the adversarial term switches on at the chosen step, the encoder never
changes, and LPIPS is used (with gradients) when its weights are on disk."""

from __future__ import annotations

import copy

import pytest
import torch
from sketchdec_fixtures import T, tiny_batch

from conftest import TINY_A
from toonctl.pipelines.decoders import DECODERS
from toonctl.training.decoder_objective import (
    DecoderDraws,
    DecoderObjective,
    PerceptualLoss,
    image_decoder_init,
    is_dual_reference_key,
)
from toonctl.weights import load_weights


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def released_vae():
    vae = load_weights(TINY_A / "model.safetensors", TINY_A / "config.yaml", components=["vae"])["vae"]
    return vae.eval().requires_grad_(False)


@pytest.fixture()
def vae(released_vae):
    return copy.deepcopy(released_vae)


def _ssim_only() -> PerceptualLoss:
    return PerceptualLoss(use_lpips=False, quiet=True)


def _draws(seed: int = 0) -> DecoderDraws:
    return DecoderDraws.draw(
        batch_size=1, num_frames=T, latent_hw=(4, 8), generator=torch.Generator().manual_seed(seed)
    )


def test_image_decoder_init_decodes_as_the_plain_per_frame_decoder(vae, released_vae):
    image_decoder_init(vae.decoder)  # the released decoder's own 2-D weights, dual-reference parts reset
    objective = DecoderObjective(vae, perceptual=_ssim_only(), disc_start=0)
    with torch.no_grad():
        z, refs = objective.encode(tiny_batch().video, _draws())
        ours = objective.reconstruct(z, refs)
        plain = DECODERS["perframe"](released_vae, z * vae.config.scale_factor, refs)
        two_d = vae.decode(z, refs, references=False, temporal=False).float()  # all frames in one call
        released = released_vae.decode(z, refs)  # the released decoder, as trained, is not the image decoder
    scale = plain.abs().max().item()
    assert torch.equal(ours, two_d)  # the reset parts are exact identities
    assert (ours - plain).abs().max().item() <= 1e-5 * scale  # one frame per call: another summation order
    assert (released - plain).abs().max().item() > 1e-3 * scale
    state = vae.decoder.state_dict()
    assert all(not state[k].any() for k in state if k.endswith(("to_out.0.weight", "out_layers.3.weight")))


def test_image_decoder_init_from_another_file_copies_every_2d_tensor(vae, released_vae):
    source = {k: v + 0.5 for k, v in released_vae.decoder.state_dict().items() if not is_dual_reference_key(k)}
    copied = image_decoder_init(vae.decoder, source)
    assert sorted(copied) == sorted(source)
    assert torch.equal(vae.decoder.conv_in.weight, source["conv_in.weight"])
    with pytest.raises(ValueError, match="lacks or differs"):
        image_decoder_init(vae.decoder, {k: v for k, v in source.items() if k != "conv_in.weight"})


def test_l1_falls_over_fitting_one_clip_and_the_encoder_is_unchanged(vae):
    objective = DecoderObjective(vae, perceptual=_ssim_only(), disc_start=10**9)
    frozen = {k: v.clone() for k, v in vae.state_dict().items() if not k.startswith("decoder.")}
    optimizer = torch.optim.Adam(objective.trainable_modules()["decoder"].parameters(), lr=2e-3)
    batch = tiny_batch()
    l1 = []
    for step in range(5):
        result = objective.step_loss(batch, step=step, draws=_draws())
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        l1.append(result.logs["l1"])
    assert l1[-1] < 0.7 * l1[0], l1
    assert all(torch.equal(v, frozen[k]) for k, v in vae.state_dict().items() if k in frozen)
    assert all(p.grad is None for p in vae.encoder.parameters())


def test_adversarial_term_switches_on_at_disc_start(vae):
    torch.manual_seed(0)
    objective = DecoderObjective(vae, perceptual=_ssim_only(), disc_start=3)
    batch = tiny_batch()
    before = objective.step_loss(batch, step=2, draws=_draws())
    rec = before.logs["l1"] + objective.perceptual.weight * before.logs["ssim"]
    assert before.logs["disc_factor"] == 0 and before.logs["d_weight"] == 0
    assert before.loss.item() == pytest.approx(rec, rel=1e-6)
    before.loss.backward()
    assert all(p.grad is None for p in objective.discriminator.parameters())
    d_before, _ = objective.discriminator_step_loss(batch, step=2)
    assert d_before.item() == 0 and d_before.requires_grad

    after = objective.step_loss(batch, step=3, draws=_draws())
    assert after.logs["disc_factor"] == 1 and after.logs["d_weight"] > 0
    expected = rec + after.logs["d_weight"] * after.logs["g_loss"]
    assert after.loss.item() == pytest.approx(expected, rel=1e-5)
    d_after, logs = objective.discriminator_step_loss(batch, step=3)
    assert d_after.item() == pytest.approx(logs["d_loss"]) and d_after.item() > 0
    d_after.backward()
    assert all(p.grad is not None for p in objective.discriminator.parameters())


def test_lpips_is_used_when_its_weights_are_on_disk(tmp_path, capsys):
    from toonctl.metrics import ALEXNET_FILE, LPIPS, LPIPS_LINEAR_FILE

    torch.manual_seed(0)
    fake = LPIPS()
    backbone = {f"features.{i}.{p}": getattr(conv, p) for i, conv in fake.features.items() for p in ("weight", "bias")}
    torch.save(backbone, tmp_path / ALEXNET_FILE)
    heads = {f"lin{i}.model.1.weight": lin.weight.abs() for i, lin in enumerate(fake.lins)}
    torch.save(heads, tmp_path / LPIPS_LINEAR_FILE)
    loss = PerceptualLoss(tmp_path)
    assert loss.kind == "lpips" and loss.weight == 0.1
    recon = torch.zeros(2, 3, 32, 64, requires_grad=True)
    value = loss(recon, torch.rand(2, 3, 32, 64) * 2 - 1)
    value.backward()
    assert value.item() > 0 and recon.grad.abs().sum() > 0
    _ssim = PerceptualLoss(tmp_path / "nowhere")
    assert "using L1 + (1 - SSIM)" in capsys.readouterr().err
    assert _ssim.kind == "ssim"


def test_gradient_checkpointing_gives_the_same_gradients(released_vae):
    batch = tiny_batch()
    grads = []
    for checkpointing in (False, True):
        objective = DecoderObjective(copy.deepcopy(released_vae), perceptual=_ssim_only(), adversarial=False)
        if checkpointing:
            objective.enable_gradient_checkpointing()
        objective.step_loss(batch, draws=_draws()).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in objective.decoder.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-8)
