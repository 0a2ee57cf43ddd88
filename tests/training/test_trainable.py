"""Presets and ``--trainable`` regexes: the 512 model's counts, frozen weights staying bit-identical, and a
tiny over-fitting run whose loss falls."""

from __future__ import annotations

import types

import pytest
import torch
from train_fixtures import load_tiny_pipe, tiny_batch, tiny_draws

STEPS = 20  # optimizer steps of the over-fitting run
# training-spec.md §2.2 (definitions A and E, and the group sizes of the released 512 model)
COUNTS_512 = {"rectify": 940_268_740, "full": 1_487_642_436, "projector": 48_787_456, "spatial": 891_481_284}
GROUPS_512 = {
    "temporal_attn": 272_850_880,
    "init_attn": 5_580_736,
    "temporal_conv": 266_891_520,
    "fps_embedding": 2_050_560,
    "projector": 48_787_456,
}


@pytest.fixture(scope="module")
def meta_512():
    from toonctl.models.configs import ToonCrafterConfig
    from toonctl.models.image_proj import Resampler
    from toonctl.models.unet_toon3d import ToonUNet3D

    config = ToonCrafterConfig()
    with torch.device("meta"):
        return types.SimpleNamespace(unet=ToonUNet3D(config.unet), image_proj=Resampler(config.image_proj))


@pytest.mark.parametrize("preset", sorted(COUNTS_512))
def test_preset_counts_at_512(meta_512, preset):
    from toonctl.training.trainable import apply_trainable

    summary = apply_trainable(meta_512, preset)
    assert summary.trainable_params == COUNTS_512[preset]
    assert summary.total_params == COUNTS_512["full"]
    for group, size in GROUPS_512.items():
        assert summary.groups[group].total == size


def test_maintainer_regex_freezes_exactly_the_temporal_transformers(meta_512):
    """DynamiCrafter issue 84's regex for the temporal transformers, negated: definition D of the spec."""
    from toonctl.training.trainable import apply_trainable

    temporal = (
        r"model\.diffusion_model\.((input|output)_blocks\.\d+|middle_block)\.2\."
        r"(norm|proj_in|transformer_blocks|proj_out)"
    )
    summary = apply_trainable(meta_512, rf"^(?!{temporal})")
    assert summary.trainable_params == 1_214_791_556
    assert summary.groups["temporal_attn"].trainable == 0
    assert summary.groups["init_attn"].trainable == summary.groups["init_attn"].total


def test_bad_specs_are_user_errors(meta_512):
    from toonctl.errors import ToonctlError
    from toonctl.training.trainable import apply_trainable

    with pytest.raises(ToonctlError, match="not a valid regular expression"):
        apply_trainable(meta_512, "attn2.(to_q")
    with pytest.raises(ToonctlError, match="matches no"):
        apply_trainable(meta_512, "first_stage_model")


def test_rectify_training_keeps_frozen_weights_and_fits_one_clip():
    from toonctl.training.objective import interpolation_loss
    from toonctl.training.trainable import apply_trainable, iter_parameters

    torch.manual_seed(0)
    pipe = load_tiny_pipe()
    summary = apply_trainable(pipe, "rectify")
    assert 0 < summary.trainable_params < summary.total_params
    before = {key: p.detach().clone() for key, _, p in iter_parameters(pipe)}
    frozen = {key for key, _, p in iter_parameters(pipe) if not p.requires_grad}
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    pipe.unet.train()
    # Every UNet parameter goes to the optimizer, as the official trainer does: requires_grad alone freezes.
    params = [*pipe.unet.parameters(), *pipe.image_proj.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)

    batch = tiny_batch()
    eval_draws = [tiny_draws(batch, seed=1000 + i) for i in range(3)]

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(interpolation_loss(pipe, batch, d, uncond_prob=0.0).loss.item() for d in eval_draws) / 3

    start = eval_loss()
    for step in range(STEPS):
        loss = interpolation_loss(pipe, batch, tiny_draws(batch, seed=step), uncond_prob=0.0).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end = eval_loss()
    assert end < 0.7 * start, f"loss {start:.4f} -> {end:.4f}"

    after = {key: p.detach() for key, _, p in iter_parameters(pipe)}
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert any(not torch.equal(after[k], before[k]) for k in after if k not in frozen)
    assert all(torch.equal(v, vae_before[k]) for k, v in pipe.vae.state_dict().items())


def test_documented_regex_for_definition_b(meta_512):
    """docs/training.md: every key but the temporal parts = rectify + fps_embedding."""
    from toonctl.training.trainable import apply_trainable

    regex = (
        r"^(?!model\.diffusion_model\.(init_attn\.|.*\.temopral_conv\."
        r"|((input|output)_blocks\.\d+|middle_block)\.2\.))"
    )
    summary = apply_trainable(meta_512, regex)
    assert summary.trainable_params == 942_319_300
    assert summary.groups["fps_embedding"].trainable == summary.groups["fps_embedding"].total
