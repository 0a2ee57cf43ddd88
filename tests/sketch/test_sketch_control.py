"""The sketch control stage in the tiny-a pipeline: the identity properties (no stage, scale 0, no sketch),
the sparse mask, the scale, the context choice, frame numbering of chains and windowed colorization."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sketch_fixtures import tiny_encoder

from conftest import TINY_A
from toonctl.pipelines.chain import ChainSettings
from toonctl.pipelines.interpolate import InterpolationPipeline
from toonctl.pipelines.sketch import (
    SketchControl,
    chain_frame_map,
    colorize,
    colorize_passes,
    run_frames,
    sketch_interp,
    split_sketches,
)

H, W = 32, 64


@pytest.fixture(scope="module")
def pipe():
    return InterpolationPipeline.from_checkpoint(TINY_A / "model.safetensors", TINY_A / "config.yaml")


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


def _frame(seed: int) -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _hint(seed: int) -> torch.Tensor:
    return (torch.rand(1, H, W, generator=torch.Generator().manual_seed(seed)) > 0.8).float()


def _run(pipe, control=None, seed=3):
    out = pipe(
        _frame(0), _frame(1), "a ball", num_frames=4, steps=2, generator=torch.Generator().manual_seed(seed),
        control=control,
    )  # fmt: skip
    return out.video, out.latents


def test_no_stage_scale_zero_and_no_sketches_are_plain_interpolation_bit_for_bit(pipe, encoder):
    video, latents = _run(pipe)
    for control in (
        SketchControl(encoder, {1: _hint(0), 2: _hint(1)}, 4, scale=0.0, dense=True),
        SketchControl(encoder, {}, 4),
    ):
        other_video, other_latents = _run(pipe, control)
        assert torch.equal(other_latents, latents) and torch.equal(other_video, video)
    # ... while a sketch at a non-zero scale does steer.
    steered_video, _ = _run(pipe, SketchControl(encoder, {1: _hint(0), 2: _hint(1)}, 4))
    assert not torch.allclose(steered_video, video)


def _stage_inputs(b=2, t=6):
    g = torch.Generator().manual_seed(7)
    return (
        torch.randn(b, 4, t, H // 8, W // 8, generator=g),
        torch.tensor([901, 901])[:b],
        torch.randn(b, 77 + 16 * t, 16),
    )


def test_sparse_mask_zeroes_unsketched_frames_exactly(encoder):
    x, t, context = _stage_inputs()
    hints = {1: _hint(0), 4: _hint(1)}
    sparse = SketchControl(encoder, hints, 6)
    assert sparse.frame_mask.tolist() == [False, True, False, False, True, False]
    dense = SketchControl(encoder, hints, 6, dense=True)
    with torch.no_grad():
        residuals, full = sparse(x, t, context), dense(x, t, context)
    assert len(residuals) == encoder.config.num_residuals
    for r, f in zip(residuals, full, strict=True):
        r, f = r.view(2, 6, *r.shape[1:]), f.view(2, 6, *f.shape[1:])
        assert r[:, [0, 2, 3, 5]].abs().max() == 0  # no control at all without a sketch
        assert f[:, [0, 2, 3, 5]].abs().max() > 0  # a blank sketch still steers (the community behaviour)
        # Sketched frames: the same as masking a full run (the encoder is frame-independent).
        torch.testing.assert_close(r[:, [1, 4]], f[:, [1, 4]], rtol=1e-4, atol=1e-5)


def test_scale_is_linear_and_context_is_the_text_tokens(encoder):
    x, t, context = _stage_inputs()
    seen = []

    def spy(latent, hint, steps, tokens):
        seen.append((tuple(latent.shape), tuple(hint.shape), tuple(tokens.shape)))
        return encoder(latent, hint, steps, tokens)

    spy.parameters = encoder.parameters
    hints = {3: _hint(2)}
    with torch.no_grad():
        half = SketchControl(spy, hints, 6, scale=0.3)(x, t, context)
        full = SketchControl(spy, hints, 6, scale=0.6)(x, t, context)
        SketchControl(spy, hints, 6, context="all")(x, t, context)
    for a, b in zip(half, full, strict=True):
        torch.testing.assert_close(2 * a, b)
    assert seen[0] == ((2, 4, 1, 4, 8), (2, 1, 1, 32, 64), (2, 77, 16))  # only the sketched frame is encoded
    assert seen[2][2] == (2, 77 + 16 * 6, 16)
    with pytest.raises(ValueError, match="frames \\[6\\]"):
        SketchControl(encoder, {6: _hint(0)}, 6)
    with pytest.raises(ValueError, match="context"):
        SketchControl(encoder, hints, 6, context="image")


def test_chain_frame_numbering():
    # Two keys, all in-betweens: output frame i is model frame i.
    assert chain_frame_map(2, 16, ChainSettings()) == [[(0, i)] for i in range(16)]
    # Three keys on twos (-n 7): frame 8 is key 1, the end of segment 0 and the start of segment 1.
    frames = chain_frame_map(3, 16, ChainSettings(inbetweens=7))
    assert len(frames) == 17
    assert frames[8] == [(1, 0), (0, 15)] and frames[1] == [(0, 2)] and frames[16] == [(1, 15)]
    # Loop: the first key also closes the last segment.
    looped = chain_frame_map(2, 16, ChainSettings(inbetweens=3, loop=True))
    assert len(looped) == 8 and looped[0] == [(0, 0), (1, 15)] and looped[4] == [(1, 0), (0, 15)]
    per_segment = split_sketches({8: "key", 3: "mid"}, frames)
    assert per_segment == [{15: "key", 6: "mid"}, {0: "key"}]
    with pytest.raises(ValueError, match="output has 17 frames"):
        split_sketches({17: "late"}, frames)


def test_sketch_interp_runs_one_stage_per_segment(pipe, encoder):
    keys = [_frame(0), _frame(1), _frame(2)]
    settings = ChainSettings(inbetweens=2)
    kwargs = dict(num_frames=4, steps=1)
    plain = sketch_interp(
        pipe, encoder, keys, {}, settings=settings, generator=torch.Generator().manual_seed(0), **kwargs
    )
    steered = sketch_interp(
        pipe, encoder, keys, {4: _hint(3)}, settings=settings, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert plain.shape == steered.shape == (7, 3, H, W)
    # The sketch of frame 4 (segment 1, an in-between) changes segment 1 only.
    assert torch.equal(plain[:3], steered[:3]) and not torch.equal(plain[4:6], steered[4:6])


@pytest.mark.parametrize("window", [4, 6, 16])
@pytest.mark.parametrize("n", [2, 3, 5, 16, 17, 40, 300])
def test_colorize_passes_share_boundaries(n, window):
    passes = colorize_passes(n, window)
    known = {0, n - 1}
    generated = []
    for p in passes:
        assert list(p) == sorted(set(p)) and 2 <= len(p) <= window
        assert p[0] in known and p[-1] in known  # both ends coloured before the run
        generated += p[1:-1]
        known.update(p)
    assert sorted(generated) == list(range(1, n - 1))  # every frame coloured exactly once
    windows = [p for p in passes if p == tuple(range(p[0], p[-1] + 1))]
    if n > window:  # consecutive windows tile the sequence, each starting where the previous ended
        assert [w[0] for w in windows][1:] == [w[-1] for w in windows][:-1]
        assert windows[0][0] == 0 and windows[-1][-1] == n - 1


def test_short_passes_are_spread_over_four_model_frames():
    assert run_frames(2) == (4, [0, 3])
    assert run_frames(3) == (4, [0, 2, 3])
    assert run_frames(6) == (6, [0, 1, 2, 3, 4, 5])


class FakePipe:
    """Records each run; frame j of run r is filled with the value 10 r + j (a traceable colour)."""

    def __init__(self):
        self.config = SimpleNamespace(unet=SimpleNamespace(temporal_length=16, text_context_len=77))
        self.runs = []

    def __call__(self, start, end, prompt, *, num_frames, control, generator, **kwargs):
        self.runs.append(SimpleNamespace(start=start, end=end, frames=num_frames, sketched=sorted(control.hints)))
        r = len(self.runs) - 1
        values = torch.arange(num_frames, dtype=torch.float32) / 100 + r / 10
        return SimpleNamespace(video=values.view(1, 1, num_frames, 1, 1).expand(1, 3, num_frames, H, W).clone())


@pytest.mark.parametrize("refs", [1, 2])
def test_windowed_colorization_keeps_boundaries_consistent(refs):
    pipe = FakePipe()
    references = [torch.full((3, H, W), -0.5), torch.full((3, H, W), 0.5)][:refs]
    sketches = {i: _hint(i) for i in range(12)}
    frames = colorize(pipe, None, references, sketches, 12, window=6)
    assert frames.shape == (12, 3, H, W)
    # 11 steps in windows of at most 5: boundaries 0, 4, 7, 11 coloured first, then three windows.
    assert [r.frames for r in pipe.runs] == [4, 5, 4, 5]
    key_pass, *windows = pipe.runs
    assert key_pass.sketched == [0, 1, 2, 3]  # the sketches of frames 0, 4, 7, 11 on model frames 0..3
    assert torch.equal(frames[0], references[0])
    assert torch.equal(key_pass.start, references[0]) and torch.equal(key_pass.end, references[-1])
    if refs == 2:
        assert torch.equal(frames[11], references[1])
    else:  # one reference: the last frame is generated by the key pass
        assert torch.allclose(frames[11], torch.full((3, H, W), 0.03))
    # Each window starts on the picture the previous one ended on: the shared boundary frame.
    for previous, window in zip(windows[:-1], windows[1:], strict=True):
        assert torch.equal(window.start, previous.end)
    for boundary, window in zip((4, 7), windows[1:], strict=True):
        assert torch.equal(window.start, frames[boundary])
    assert torch.allclose(frames[4], torch.full((3, H, W), 0.01)) and torch.allclose(
        frames[7], torch.full((3, H, W), 0.02)
    )
    with pytest.raises(ValueError, match="one or two"):
        colorize(pipe, None, references * 3, sketches, 12)
    with pytest.raises(ValueError, match="at most the model's 16"):
        colorize(pipe, None, references, sketches, 12, window=17)
