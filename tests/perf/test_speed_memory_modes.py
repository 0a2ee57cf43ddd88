"""Speed/memory modes give the same frames: offload, device maps, released encoders, attention backends,
prepared conditioning; every precision runs; the UNet compiles without graph breaks."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_A, rel_error
from toonctl.device import resolve_device
from toonctl.models.attention import attention_backend
from toonctl.pipelines.interpolate import InterpolationNoise, InterpolationPipeline
from toonctl.pipelines.placement import ComponentPlacement, parse_device_map

KEYS = [torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(2)]


def load(**kwargs) -> InterpolationPipeline:
    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml", **kwargs)


def run(pipe: InterpolationPipeline, num_frames: int = 16, steps: int = 2, **kwargs) -> torch.Tensor:
    noise = InterpolationNoise.draw(
        num_frames=num_frames, latent_hw=(4, 8), num_steps=steps, generator=torch.Generator().manual_seed(0)
    )
    return pipe(*KEYS, "a fox", num_frames=num_frames, steps=steps, noise=noise, **kwargs).video


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return run(load())


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_gives_the_same_frames(reference, offload):
    pipe = load(offload=offload)
    assert torch.equal(run(pipe), reference)
    if offload == "model":  # components wait on the CPU between uses
        assert all(p.device.type == "cpu" for p in pipe.unet.parameters())
    else:  # accelerate hooks keep the weights off the module until a layer runs
        assert any(p.is_meta for p in pipe.unet.parameters())


def test_device_map_gives_the_same_frames(reference):
    pipe = load(device_map={"vae": "cpu", "text_encoder": "cpu", "unet": "cpu"})
    assert torch.equal(run(pipe), reference)


def test_placement_errors(monkeypatch):
    with pytest.raises(ValueError, match="offload mode"):
        ComponentPlacement("cpu", offload="disk")
    with pytest.raises(ValueError, match="unknown components"):
        ComponentPlacement("cpu", device_map={"unet2": "cpu"})
    with pytest.raises(ValueError, match="cannot be combined"):
        ComponentPlacement("cpu", offload="model", device_map={"vae": "cpu"})
    with monkeypatch.context() as m:  # a two-GPU machine
        m.setattr(torch.cuda, "is_available", lambda: True)
        m.setattr(torch.cuda, "device_count", lambda: 2)
        assert parse_device_map("unet=cuda:1, vae=cuda:0") == {"unet": "cuda:1", "vae": "cuda:0"}
    with monkeypatch.context() as m:  # a CPU-only torch: refused here (a usage error), not when loading
        m.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="CUDA is not available"):
            parse_device_map("unet=cuda:1")
    with pytest.raises(ValueError, match="component=device"):
        parse_device_map("unet")
    with pytest.raises(ValueError, match="unknown component 'unet2'"):
        parse_device_map("unet2=cpu")
    with pytest.raises(ValueError, match="unknown device 'cpux'"):
        parse_device_map("unet=cpux")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_released_encoders_with_precomputed_conditions(reference):
    pipe = load()
    conditions = pipe.prepare_conditions(*KEYS, "a fox")
    pipe.release_encoders()
    assert torch.equal(run(pipe, conditions=conditions), reference)
    with pytest.raises(RuntimeError, match="released"):
        pipe.encode_text(["a fox"])


def test_attention_backends_agree(reference):
    pipe = load()
    with attention_backend("math"):
        assert rel_error(run(pipe), reference) < 1e-4


def test_prepared_unet_conditioning_is_the_same_computation():
    pipe = load()
    unet = pipe.unet
    x = torch.randn(2, 8, 16, 4, 8, generator=torch.Generator().manual_seed(1))
    t, fs = torch.tensor([999, 374]), torch.tensor([10, 24])
    context = torch.randn(2, 333, 16, generator=torch.Generator().manual_seed(2))
    prepared = unet.prepare_conditioning(context, fs, 16)
    assert torch.equal(unet(x, t, prepared), unet(x, t, context, fs))
    with pytest.raises(ValueError, match="prepared conditioning"):
        unet(x[:, :, :8], t, prepared)


@pytest.mark.parametrize(
    ("dtype", "autocast", "tol"),
    [(torch.bfloat16, None, 0.5), (torch.float16, None, 0.1), (torch.float32, torch.float16, 0.1)],
    ids=["bf16", "fp16", "fp32-weights-fp16-autocast"],
)
def test_every_precision_runs(dtype, autocast, tol):
    fp32 = run(load(), num_frames=4, steps=1)
    pipe = load(dtype=dtype)
    pipe.autocast_dtype = autocast
    assert {p.dtype for p in pipe.unet.parameters()} == {dtype}
    video = run(pipe, num_frames=4, steps=1)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    assert rel_error(video, fp32) < tol


def test_unet_compiles_without_graph_breaks():
    pipe = load()
    x = torch.randn(2, 8, 16, 4, 8)
    prepared = pipe.unet.prepare_conditioning(torch.randn(2, 333, 16), torch.tensor([10, 10]), 16)
    explanation = torch._dynamo.explain(pipe.unet)(x, torch.tensor([999, 500]), prepared)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
