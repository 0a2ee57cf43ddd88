"""``--cache-latents``: cached VAE posteriors give the very same loss, skip the VAE, and never cross VAEs."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from test_train_cli import FAST, invoke
from train_fixtures import load_tiny_pipe, tiny_batch

from toonctl.training.latent_cache import LatentCache
from toonctl.training.objective import encode_posterior
from toonctl.training.unet_objective import UNetObjective, UNetSettings


def count_encodes(pipe) -> list[int]:
    """Wrap ``pipe.vae.encode`` to count the frames it encodes; returns the (live) one-item counter."""
    calls = [0]
    encode = pipe.vae.encode

    def counted(x):
        calls[0] += x.shape[0]
        return encode(x)

    pipe.vae.encode = counted
    return calls


def unet_objective(pipe, cache=None) -> UNetObjective:
    return UNetObjective(pipe, UNetSettings(weights="unused", trainable="full", dropout=0.0), latent_cache=cache)


def test_cached_loss_equals_uncached_and_skips_the_vae(tmp_path):
    batch = tiny_batch(frames=3, batch=2)
    batch.video[1] += 0.05  # two different clips: 6 different frames
    pipe = load_tiny_pipe()
    calls = count_encodes(pipe)
    with torch.no_grad():
        plain = unet_objective(pipe).compute_loss(batch, torch.Generator().manual_seed(5)).loss
        assert calls[0] == 6  # 2 clips x 3 frames, one at a time
        cached = unet_objective(pipe, tmp_path / "cache")
        first = cached.compute_loss(batch, torch.Generator().manual_seed(5)).loss
        assert calls[0] == 12 and (cached.latent_cache.misses, cached.latent_cache.hits) == (6, 0)
        files = sorted((tmp_path / "cache").rglob("*.safetensors"))
        assert len(files) == 6
        assert load_file(str(files[0]))["mean"].shape == (4, 4, 8)  # (4, h, w) of a 32x64 frame
        second = cached.compute_loss(batch, torch.Generator().manual_seed(5)).loss
    assert calls[0] == 12 and (cached.latent_cache.misses, cached.latent_cache.hits) == (6, 6)  # no VAE call
    assert torch.equal(first, plain) and torch.equal(second, plain)  # bit for bit


def test_other_vae_weights_do_not_reuse_the_cache(tmp_path):
    video = tiny_batch(frames=2).video
    pipe = load_tiny_pipe()
    LatentCache(tmp_path, pipe).posterior(pipe, video)
    other = load_tiny_pipe()
    with torch.no_grad():
        other.vae.encoder.conv_in.weight.mul_(1.5)
    cache = LatentCache(tmp_path, other)
    assert cache.identity != LatentCache(tmp_path, pipe).identity
    mean, std = cache.posterior(other, video)
    assert (cache.misses, cache.hits) == (2, 0)
    expected_mean, expected_std = encode_posterior(other, video)
    assert torch.equal(mean, expected_mean) and torch.equal(std, expected_std)
    assert not torch.equal(mean, encode_posterior(pipe, video)[0])
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_a_damaged_file_is_a_miss(tmp_path):
    video = tiny_batch(frames=1).video
    pipe = load_tiny_pipe()
    cache = LatentCache(tmp_path, pipe)
    expected = cache.posterior(pipe, video)
    (path,) = tmp_path.rglob("*.safetensors")
    path.write_bytes(b"not a tensor file")
    again = LatentCache(tmp_path, pipe)
    result = again.posterior(pipe, video)
    assert again.misses == 1 and all(torch.equal(a, b) for a, b in zip(result, expected, strict=True))
    assert LatentCache(tmp_path, pipe)._read(path) is not None  # rewritten


def test_cli_cache_latents_two_steps(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    from engine_fixtures import moving_square_clip

    moving_square_clip(clips / "a.mp4", count=8)
    cache = tmp_path / "latents"
    runs = {}
    for name, extra in (("plain", []), ("fill", ["--cache-latents", cache]), ("reuse", ["--cache-latents", cache])):
        result = invoke("unet", clips, "-o", tmp_path / name, "--max-steps", "2", *FAST, *extra)
        assert result.exit_code == 0, result.output
        runs[name] = load_file(str(tmp_path / name / "checkpoints" / "step-0000002" / "model.safetensors"))
        if name == "fill":
            written = sorted(cache.rglob("*.safetensors"))
            assert written  # frames of both steps' clips (4 frames each; repeats share a file)
    assert sorted(cache.rglob("*.safetensors")) == written  # the second cached run only read
    for key, value in runs["plain"].items():  # the same training, bit for bit, with or without the cache
        assert torch.equal(runs["fill"][key], value) and torch.equal(runs["reuse"][key], value), key
