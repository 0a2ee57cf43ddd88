"""Decoder stages on the tiny-a VAE: the default is the previous decode bit for bit, the variants that must be
identical are, and chunking's approximation stays within its measured bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import TINY_A, load_golden
from toonctl.pipelines.decoders import DECODERS, DualRefDecoder, chunk_plan, parse_decoder, without_splice
from toonctl.weights import load_weights


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: decodes this small are overhead-bound, and two threads sharing a busy CPU with other
    work run them ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae():
    return load_weights(TINY_A / "model.safetensors", TINY_A / "config.yaml", components=["vae"])["vae"].eval()


T = 8  # frames per test clip; with the left half of the golden frames (32x32) a decode takes ~0.5 s on a CPU


@pytest.fixture(scope="module")
def clip():
    """Golden sampled latents and key-frame features, cut to T frames and the left half: ``(1, 4, T, 4, 4)`` and
    ``(1, C_i, 2, H_i, W_i / 2)``. Any crop of the features is a valid input (the decoder is convolutional)."""
    enc = load_golden("vae_encode")
    refs = [enc[f"hidden_{i}"].unsqueeze(0).transpose(1, 2) for i in range(5)]  # (1, C, 2, H, W)
    latents = load_golden("e2e_T16_eta1")["samples"]
    return latents[:, :, :T, :, :4], [r[..., : r.shape[-1] // 2] for r in refs]


def _previous_decode(vae, latents, refs, splice=True):
    """``InterpolationPipeline.decode_latents`` as it was before the decoder stages, line for line."""
    dtype = next(vae.parameters()).dtype
    z = (latents / vae.config.scale_factor).to(dtype)
    ref = [r.to(dtype) for r in refs]
    video = vae.decode(z, ref).float()
    num_frames = z.shape[2]
    if splice and num_frames >= 4:
        keep = [0, *range(2, num_frames - 2), num_frames - 1]
        middle = vae.decode(z[:, :, keep], ref).float()
        half = num_frames // 2
        video[:, :, half - 1 : half + 1] = middle[:, :, half - 2 : half]
    return video


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def one_pass(vae, clip):
    return DECODERS["dualref-nosplice"](vae, *clip)


@pytest.fixture(scope="module")
def full(vae, clip):
    return DECODERS["dualref"](vae, *clip)


def test_default_decoder_is_the_previous_decode_bit_for_bit(vae, clip, one_pass, full):
    assert torch.equal(full, _previous_decode(vae, *clip))
    # dualref-nosplice is the first pass alone; the splice replaces exactly the two middle frames
    assert torch.equal(one_pass, _previous_decode(vae, *clip, splice=False))
    assert without_splice(DECODERS["dualref"]) == replace(DECODERS["dualref-nosplice"], name="dualref-nosplice")
    others = [i for i in range(T) if i not in (T // 2 - 1, T // 2)]
    assert torch.equal(full[:, :, others], one_pass[:, :, others]) and not torch.equal(full, one_pass)


def test_the_splice_replaces_middle_frames_by_the_same_frames(vae, clip):
    """The splice is position arithmetic on the shorter clip: from T = 6 on it lands each frame's second decode
    on that frame; T = 4 and 5 would move other frames' decodes there, so they are left alone."""
    latents, refs = clip
    for num_frames in (4, 5):
        short = latents[:, :, :num_frames]
        assert torch.equal(DECODERS["dualref"](vae, short, refs), DECODERS["dualref-nosplice"](vae, short, refs))
    short = latents[:, :, :6]
    spliced = DECODERS["dualref"](vae, short, refs)
    second = DECODERS["dualref-nosplice"](vae, short[:, :, [0, 2, 3, 5]], refs)  # without frames 1 and T-2
    assert torch.equal(spliced[:, :, 2:4], second[:, :, 1:3])


def test_pipeline_decodes_through_the_stage(vae, clip, one_pass, full):
    from toonctl.pipelines.interpolate import InterpolationPipeline

    pipe = object.__new__(InterpolationPipeline)  # decode_latents needs the VAE and the stage only
    pipe.vae = vae
    assert pipe.decoder is DECODERS["dualref"]
    assert torch.equal(pipe.decode_latents(*clip), full)
    assert torch.equal(pipe.decode_latents(*clip, splice=False), one_pass)
    stage = DualRefDecoder(name="c", splice=False, chunk=T, overlap=1)  # one window: the one pass
    assert torch.equal(pipe.decode_latents(*clip, decoder=stage), one_pass)
    pipe.decoder = DECODERS["norefs"]
    assert not torch.equal(pipe.decode_latents(*clip), one_pass)


def test_every_variant_decodes(vae, clip):
    latents, refs = clip
    for name, stage in DECODERS.items():
        video = stage(vae, latents[:, :, :5], refs)
        assert video.shape == (1, 3, 5, 32, 32) and video.dtype == torch.float32, name
        assert torch.isfinite(video).all(), name


def test_chunking_is_exact_without_temporal_layers(vae, clip):
    """Without time_stack and time_mix_conv only the Combiners tie frames together (first and last frame):
    chunked decoding must give the one-pass frames, which checks the windows and the reference placement."""
    spatial = DECODERS["spatial"]
    one = spatial(vae, *clip)
    for chunk, overlap in [(5, 2), (3, 0)]:
        assert _max_diff(replace(spatial, chunk=chunk, overlap=overlap)(vae, *clip), one) < 1e-5
    perframe = DECODERS["perframe"]
    assert _max_diff(perframe(vae, *clip), replace(perframe, chunk=None)(vae, *clip)) < 1e-5


def test_chunking_approximates_one_pass_better_with_more_overlap(vae, clip, one_pass):
    """The time_stack GroupNorms pool statistics over the frames of a chunk, so chunks only approximate one
    pass. Max |diff| on this random tiny model (outputs up to ~3): see ``CHUNK_ERRORS``."""
    errors = {
        key: _max_diff(DualRefDecoder(name="c", splice=False, chunk=key[0], overlap=key[1])(vae, *clip), one_pass)
        for key in CHUNK_ERRORS
    }
    for key, measured in CHUNK_ERRORS.items():
        assert errors[key] < 1.5 * measured, (key, errors[key])
    assert list(errors.values()) == sorted(errors.values())  # more overlap, closer


# Max |chunked - one pass| measured on this 8-frame clip (outputs up to 3.9) for (chunk, overlap), torch 2.13 on
# a CPU. For the 16-frame golden clip at 32x64: 15/14 ~ 0.010, 8/6 ~ 0.046, 8/4 ~ 0.15, 8/0 ~ 1.8.
CHUNK_ERRORS = {(7, 6): 0.045, (4, 3): 0.30, (4, 2): 0.39, (4, 0): 2.4}


def test_ablations_cut_what_they_say(vae, clip, one_pass):
    latents, refs = clip
    # norefs ignores the references entirely
    other_refs = [torch.randn_like(r) for r in refs]
    assert torch.equal(DECODERS["norefs"](vae, latents, refs), DECODERS["norefs"](vae, latents, other_refs))
    assert not torch.equal(DECODERS["norefs"](vae, latents, refs), one_pass)
    # spatial: changing frame 5 changes frame 5 only; with temporal layers it spreads to the neighbours
    changed = latents.clone()
    changed[:, :, 5] += 1.0
    spatial = DECODERS["spatial"]
    moved = (spatial(vae, changed, refs) - spatial(vae, latents, refs)).abs().amax(dim=(0, 1, 3, 4))
    assert moved[5] > 0 and moved[[i for i in range(T) if i != 5]].max() == 0
    spread = (DECODERS["dualref-nosplice"](vae, changed, refs) - one_pass).abs().amax(dim=(0, 1, 3, 4))
    assert spread[4] > 0 and spread[6] > 0


@pytest.mark.parametrize("num_frames", [4, 7, 14, 16, 33])
@pytest.mark.parametrize(("chunk", "overlap"), [(1, 0), (3, 1), (4, 2), (8, 4), (8, 7), (16, 0)])
def test_chunk_plan_tiles_the_clip(num_frames, chunk, overlap):
    plan = chunk_plan(num_frames, chunk, overlap)
    kept = [i for _, k in plan for i in k]
    assert kept == list(range(num_frames))
    for window, k in plan:
        assert len(window) == min(chunk, num_frames) and window.start <= k.start and k.stop <= window.stop
    for (w1, k1), (w2, _) in zip(plan, plan[1:], strict=False):
        assert w2.start < w1.stop or overlap == 0  # consecutive windows overlap when asked
        assert k1.stop - w2.start >= (w1.stop - w2.start) // 2  # the seam is the middle of the overlap


def test_parse_decoder():
    assert parse_decoder("dualref") is DECODERS["dualref"]
    assert parse_decoder("chunked:6:2") == replace(DECODERS["chunked"], name="chunked:6:2", chunk=6, overlap=2)
    assert parse_decoder("chunked:6").overlap == 3
    for bad, message in [("nope", "unknown decoder"), ("chunked:x", "bad decoder"), ("chunked:4:4", "overlap")]:
        with pytest.raises(ValueError, match=message):
            parse_decoder(bad)


def test_vae_decode_switches_are_checked(vae, clip):
    latents, refs = clip
    z = latents / vae.config.scale_factor
    with pytest.raises(ValueError, match="ref_frames"):
        vae.decode(z, refs, ref_frames=(0, T))
    with pytest.raises(ValueError, match="needs ref_context"):
        vae.decode(z, None)
    assert vae.decode(z[:, :, :2], None, references=False).shape == (1, 3, 2, 32, 32)


def test_reduced_precision_decodes_close_to_fp32(vae, clip, one_pass):
    import copy

    latents, refs = clip
    half = copy.deepcopy(vae).to(torch.float16)
    video = DECODERS["dualref-nosplice"](half, latents[:, :, :4], refs)
    assert video.dtype == torch.float32
    reference = DECODERS["dualref-nosplice"](vae, latents[:, :, :4], refs)
    assert 0 < _max_diff(video, reference) < 2e-2
