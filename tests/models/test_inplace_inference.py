"""Inference reuses intermediate buffers (``models.layers.can_overwrite``): the outputs must be bit for bit
those of the out-of-place path autograd uses, and the caller's inputs must come back untouched."""

from __future__ import annotations

import math

import pytest
import torch

from toonctl.models.autoencoder_dualref import AutoencoderKLDualRef
from toonctl.models.unet_toon3d import ToonUNet3D


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (the zero-initialised Combiners, fusion outputs and mix factors too), so every
    branch contributes; no gradients, as at inference."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            fan_in = math.prod(param.shape[1:]) if param.ndim >= 2 else 4
            param.copy_(torch.randn(param.shape, generator=gen) * fan_in**-0.5)
    return module.eval().requires_grad_(False)


def _both_ways(fn, module: torch.nn.Module | None = None):
    """``fn()`` without autograd (buffers reused) and with it (out of place). With ``module``, also checks
    that every submodule's output has the same values and strides both ways (a layout change would steer
    later kernels elsewhere at full size even where the tiny outputs agree)."""
    records: list[list[tuple[str, torch.Tensor, tuple[int, ...]]]] = [[], []]
    phase = [0]
    handles = []
    if module is not None:
        for name, sub in module.named_modules():
            handles.append(
                sub.register_forward_hook(
                    lambda m, i, out, name=name: (
                        records[phase[0]].append((name, out.detach().clone(), out.stride()))
                        if isinstance(out, torch.Tensor)
                        else None
                    )
                )
            )
    try:
        with torch.no_grad():
            fast = fn()
        phase[0] = 1
        with torch.enable_grad():
            plain = fn()
    finally:
        for handle in handles:
            handle.remove()
    assert len(records[0]) == len(records[1])
    for (name, a, sa), (_, b, sb) in zip(*records, strict=True):
        assert torch.equal(a, b) and sa == sb, f"{name}: values or strides differ ({sa} vs {sb})"
    return fast, plain


@pytest.mark.parametrize("decoder", ["dualref", "spatial", "chunked:4:2"])
def test_decode_in_place_is_bitwise_the_out_of_place_decode(tiny_config, decoder):
    from toonctl.pipelines.decoders import parse_decoder

    vae = _randomise(AutoencoderKLDualRef(tiny_config.vae), 0)
    gen = torch.Generator().manual_seed(1)
    frames = torch.rand(2, tiny_config.vae.in_channels, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        enc = vae.encode(frames)
    refs = [h.unsqueeze(0).transpose(1, 2) for h in enc.hidden_states]  # (1, C, 2, H, W), as the pipeline
    latents = torch.randn(1, tiny_config.vae.embed_dim, 6, 4, 4, generator=gen)
    kept = [latents.clone(), *(r.clone() for r in refs)]
    fast, plain = _both_ways(lambda: parse_decoder(decoder)(vae, latents, refs), vae)
    assert torch.equal(fast, plain)
    assert all(torch.equal(a, b) for a, b in zip(kept, [latents, *refs], strict=True)), "inputs were modified"


def test_encode_in_place_is_bitwise(tiny_config):
    vae = _randomise(AutoencoderKLDualRef(tiny_config.vae), 2)
    x = torch.rand(2, tiny_config.vae.in_channels, 32, 32, generator=torch.Generator().manual_seed(3))
    kept = x.clone()
    fast, plain = _both_ways(lambda: vae.encode(x), vae)
    assert torch.equal(fast.moments, plain.moments)
    assert all(torch.equal(a, b) for a, b in zip(fast.hidden_states, plain.hidden_states, strict=True))
    assert torch.equal(x, kept)


def test_unet_in_place_is_bitwise(tiny_config):
    cfg = tiny_config.unet
    unet = _randomise(ToonUNet3D(cfg), 4)
    gen = torch.Generator().manual_seed(5)
    t = cfg.temporal_length
    x = torch.randn(1, cfg.in_channels, t, 8, 8, generator=gen)
    context = torch.randn(1, cfg.text_context_len + cfg.image_tokens_per_frame * t, cfg.context_dim, generator=gen)
    kept = (x.clone(), context.clone())
    fast, plain = _both_ways(lambda: unet(x, torch.tensor([500]), context, torch.tensor([10])), unet)
    assert torch.equal(fast, plain)
    assert torch.equal(x, kept[0]) and torch.equal(context, kept[1])
