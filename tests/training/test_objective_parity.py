"""The training objective against the official training step (golden ``train_step_{keep,mixed,edge}``).

Forward tensors and the loss within 1e-4 of max|ref|; gradients of every UNet and Resampler parameter as the
golden README says: all together (max-abs and L2) within 5e-3 of the reference's, and each tensor whose
norm is at least 1 % of the largest within 1e-2 in L2.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import COMPONENT_TOL, TINY_A, assert_rel_close, load_golden

CASES = ("keep", "mixed", "edge")
GRAD_TOTAL_TOL = 5e-3
GRAD_TENSOR_TOL = 1e-2
GRAD_TENSOR_MIN_SHARE = 0.01


def golden_train_meta() -> dict:
    return json.loads((TINY_A / "train_step.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pipe():
    from toonctl.pipelines.interpolate import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")


def golden_inputs(case: str):
    from toonctl.training.objective import TrainingBatch, TrainingDraws

    ref = load_golden(f"train_step_{case}")
    meta = golden_train_meta()
    batch = TrainingBatch(video=ref["video"], prompts=meta["prompts"], fs=ref["frame_stride"])
    draws = TrainingDraws(
        random_num=ref["random_num"], t=ref["t"], posterior_noise=ref["noise_posterior"], noise=ref["noise"]
    )
    return ref, meta, batch, draws


def named_trainable(pipe) -> dict[str, torch.nn.Parameter]:
    """Official key -> parameter, for the UNet and the Resampler."""
    params = {f"model.diffusion_model.{k}": p for k, p in pipe.unet.named_parameters()}
    params.update({f"image_proj_model.{k}": p for k, p in pipe.image_proj.named_parameters()})
    return params


def check_gradients(params: dict[str, torch.nn.Parameter], ref: dict[str, torch.Tensor]) -> None:
    ref_grads = {k[len("grad.") :]: v for k, v in ref.items() if k.startswith("grad.")}
    assert set(ref_grads) == set(params), "parameter sets differ"
    ours = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double() for k, p in params.items()}
    refs = {k: v.double() for k, v in ref_grads.items()}
    flat_ours = torch.cat([ours[k].flatten() for k in sorted(refs)])
    flat_ref = torch.cat([refs[k].flatten() for k in sorted(refs)])
    max_err = (flat_ours - flat_ref).abs().max() / flat_ref.abs().max()
    l2_err = (flat_ours - flat_ref).norm() / flat_ref.norm()
    assert max_err <= GRAD_TOTAL_TOL, f"all gradients: max-abs error {max_err:.3g}"
    assert l2_err <= GRAD_TOTAL_TOL, f"all gradients: L2 error {l2_err:.3g}"
    largest = max(v.norm() for v in refs.values())
    checked = 0
    for key, ref_grad in refs.items():
        if ref_grad.norm() < GRAD_TENSOR_MIN_SHARE * largest:
            continue
        err = (ours[key] - ref_grad).norm() / ref_grad.norm()
        assert err <= GRAD_TENSOR_TOL, f"{key}: L2 error {err:.3g}"
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("case", CASES)
def test_training_step_matches_official(pipe, case):
    from toonctl.training.objective import interpolation_loss

    ref, meta, batch, draws = golden_inputs(case)
    params = named_trainable(pipe)
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    out = interpolation_loss(pipe, batch, draws, uncond_prob=meta["uncond_prob"])
    for name in ("z", "c_concat", "context", "x_start", "x_noisy", "target", "model_output", "loss_per_sample"):
        assert_rel_close(getattr(out, name), ref[name], COMPONENT_TOL, name)
    assert_rel_close(out.loss.reshape(1), ref["loss"], COMPONENT_TOL, "loss")
    out.loss.backward()
    check_gradients(params, ref)
    for p in params.values():
        p.grad = None
