"""Decoding the per-frame layers a few frames at a time (``slices``) gives the same frames.

Bit for bit wherever the CPU kernels compute a slice of the batch as they compute the whole batch; oneDNN
picks its convolution kernel by shape, batch and thread count, so at some shapes (these tiny ones among
them, and a 1x1 conv on one thread) a slice's values differ in the last bits. The tests bound that; the
full-size decoder at 320x512 is compared in ``benchmarks/bench_decode_memory.py``."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toonctl.models.autoencoder_dualref import AutoencoderKLDualRef
from toonctl.models.layers import in_slices, norm_act_conv_in_slices
from toonctl.pipelines.decoders import DECODERS, DualRefDecoder, parse_decoder


def _randomised_vae(config, seed: int = 0) -> AutoencoderKLDualRef:
    """Every parameter random (the zero-initialised Combiners and fusion outputs too), no gradients."""
    vae = AutoencoderKLDualRef(config.vae)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in vae.parameters():
            fan_in = math.prod(param.shape[1:]) if param.ndim >= 2 else 4
            param.copy_(torch.randn(param.shape, generator=gen) * fan_in**-0.5)
    return vae.eval().requires_grad_(False)


def _inputs(vae, frames: int, hw: tuple[int, int], seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    latents = torch.randn(1, vae.config.embed_dim, frames, h, w, generator=gen)
    with torch.no_grad():
        enc = vae.encode(torch.rand(2, 3, 8 * h, 8 * w, generator=gen) * 2 - 1)
    return latents, [s.unsqueeze(0).transpose(1, 2) for s in enc.hidden_states]


def test_in_slices_fills_one_output_piece_by_piece():
    calls = []

    def double(x):
        calls.append(x.shape[0])
        return x * 2

    x = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    with torch.no_grad():
        assert torch.equal(in_slices(double, x, 3), x * 2)
        assert torch.equal(in_slices(double, x.T, 2, dim=1), x.T * 2)
    assert calls == [3, 3, 1, 3, 3]
    calls.clear()
    with torch.no_grad():
        in_slices(double, x, None), in_slices(double, x, 1)
    with torch.enable_grad():
        in_slices(double, x.requires_grad_(), 2)  # autograd: one call, the graph training uses
    assert calls == [7, 7, 7]


def test_in_slices_keeps_the_memory_format():
    """(Values only close here: oneDNN's channels-last kernels block over the batch; the decoder's layers run in
    the default contiguous format, where slices give the same bits, below.)"""
    conv = nn.Conv2d(8, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(5, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        whole, sliced = conv(x), in_slices(conv, x, 2)
    assert sliced.stride() == whole.stride()
    torch.testing.assert_close(sliced, whole)


@pytest.mark.parametrize("slices", [2, 3, 7])
def test_norms_in_slices_use_the_whole_clips_statistics(slices):
    gen = torch.Generator().manual_seed(0)
    norm = nn.GroupNorm(4, 8, eps=1e-5)
    conv = nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0))
    with torch.no_grad():
        norm.weight.normal_(generator=gen), norm.bias.normal_(generator=gen)
        x = torch.randn(2, 8, 5, 9, 6, generator=gen) * 3 + 1  # an offset: the mean matters
        whole = conv(F.silu(norm(x)))
        sliced = norm_act_conv_in_slices(norm, conv, x, slices)
    assert (sliced - whole).abs().max() <= 1e-5 * whole.abs().max()


@pytest.mark.parametrize("name", ["dualref", "spatial", "norefs", "chunked:6:2"])
@pytest.mark.parametrize("slices", [2, 3, 16])
def test_sliced_decode_is_the_decode(tiny_config, name, slices):
    from dataclasses import replace

    vae = _randomised_vae(tiny_config)
    latents, refs = _inputs(vae, frames=12, hw=(4, 6))
    decoder = parse_decoder(name)
    whole = decoder(vae, latents, refs)
    sliced = replace(decoder, slices=slices)(vae, latents, refs)
    assert sliced.shape == whole.shape
    assert (sliced - whole).abs().max() <= 1e-5 * whole.abs().max()


def test_slices_must_be_positive():
    from toonctl.errors import OptionError

    with pytest.raises(OptionError, match="slices"):
        DualRefDecoder(slices=0)
    assert DECODERS["dualref"].slices is None


def test_fit_to_memory_slices_only_when_the_whole_clip_does_not_fit(tiny_config):
    from toonctl.pipelines import decoders
    from toonctl.pipelines.decoders import decode_peak_bytes, fit_to_memory

    vae = _randomised_vae(tiny_config)
    latents = torch.zeros(1, 4, 16, 40, 64)  # a 320x512 clip
    share = decoders.DECODE_SHARE_OF_FREE
    peak = {n: int(decode_peak_bytes(vae.config.ch, (320, 512), 16, 4, n) / share) + 1 for n in (None, 2, 4, 16)}
    assert peak[None] > peak[2] > peak[4] > peak[16]
    dualref = DECODERS["dualref"]
    assert fit_to_memory(dualref, vae, latents, None) is dualref
    assert fit_to_memory(dualref, vae, latents, peak[None]) is dualref
    assert fit_to_memory(dualref, vae, latents, peak[4]).slices == 4  # the fewest pieces that fit
    assert fit_to_memory(dualref, vae, latents, 1).slices == 16  # nothing fits: the least memory
    sliced = replace(dualref, slices=2)
    assert fit_to_memory(sliced, vae, latents, 1) is sliced  # a choice made by the caller stays
    chunked = parse_decoder("chunked:4:2")  # windows of 4 frames: a smaller whole
    assert (
        fit_to_memory(chunked, vae, latents, int(decode_peak_bytes(vae.config.ch, (320, 512), 4, 4, None) / share) + 1)
        is chunked
    )


def test_a_run_short_of_memory_decodes_in_slices(monkeypatch, tiny_config):
    import toonctl.pipelines.interpolate as interpolate
    from conftest import TINY_A
    from toonctl.pipelines.interpolate import InterpolationPipeline

    pipe = InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")
    seen = []
    original = interpolate.fit_to_memory

    def spy(decoder, vae, latents, free):
        chosen = original(decoder, vae, latents, free)
        seen.append(chosen.slices)
        return chosen

    monkeypatch.setattr(interpolate, "fit_to_memory", spy)
    start, end = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    run = lambda: pipe(start, end, "x", steps=2, num_frames=8, generator=torch.Generator().manual_seed(0)).video  # noqa: E731
    roomy = run()
    monkeypatch.setattr(interpolate, "available_memory", lambda device: 1)
    short = run()
    assert seen == [None, 16]
    torch.testing.assert_close(short, roomy, rtol=0, atol=1e-5)
