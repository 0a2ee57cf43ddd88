"""AutoencoderKLDualRef against the tiny-a goldens (official ``AutoencoderKL_Dualref``, float32 CPU)."""

from __future__ import annotations

import pytest
import torch

from conftest import COMPONENT_TOL, FIXTURES, assert_rel_close, load_golden, rel_error, strip_prefix
from toonctl.models.autoencoder_dualref import AutoencoderKLDualRef
from toonctl.models.configs import AutoencoderConfig

VAE_PREFIX = "first_stage_model."
UNUSED_PREFIX = "post_quant_conv."  # in the checkpoint, never used by the decode path, not allocated


def _vae_state_dict(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = strip_prefix(full, VAE_PREFIX)
    return {k: v for k, v in sd.items() if not k.startswith(UNUSED_PREFIX)}


def _ref_context(encode_golden: dict[str, torch.Tensor], num_levels: int) -> list[torch.Tensor]:
    """hidden_i of the two key frames, '(b t) c h w -> b c t h w' with t = 2."""
    refs = []
    for i in range(num_levels + 1):
        h = encode_golden[f"hidden_{i}"]  # (2, C, H, W)
        refs.append(h.reshape(-1, 2, *h.shape[1:]).transpose(1, 2))  # (1, C, 2, H, W)
    return refs


@pytest.fixture(scope="module")
def vae(tiny_config, tiny_state_dict) -> AutoencoderKLDualRef:
    model = AutoencoderKLDualRef(tiny_config.vae).eval()
    model.load_state_dict(_vae_state_dict(tiny_state_dict), strict=True)
    return model


@pytest.fixture(scope="module")
def encode_golden() -> dict[str, torch.Tensor]:
    return load_golden("vae_encode")


def test_loads_tiny_checkpoint_strictly(tiny_config, tiny_state_dict):
    model = AutoencoderKLDualRef(tiny_config.vae)
    result = model.load_state_dict(_vae_state_dict(tiny_state_dict), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(k.startswith(UNUSED_PREFIX) for k in model.state_dict())


def test_meta_build_matches_512_checkpoint_keys():
    expected: dict[str, tuple[int, ...]] = {}
    lines = (FIXTURES / "tooncrafter-512-keys.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        key, shape = line.split("\t")[:2]
        if key.startswith(VAE_PREFIX) and not key.startswith(VAE_PREFIX + UNUSED_PREFIX):
            expected[key[len(VAE_PREFIX) :]] = tuple(int(s) for s in shape.split("x"))
    with torch.device("meta"):
        model = AutoencoderKLDualRef(AutoencoderConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == [], "missing"
    assert sorted(set(got) - set(expected)) == [], "unexpected"
    assert {k: s for k, s in got.items() if expected[k] != s} == {}
    # 99,941,907 official VAE parameters minus post_quant_conv (4x4 weight + 4 bias).
    assert sum(p.numel() for p in model.parameters()) == 99_941_907 - 20


@torch.no_grad()
def test_encode_matches_golden(vae, encode_golden):
    g = encode_golden
    encoder_out, _ = vae.encoder(g["x"])
    assert_rel_close(encoder_out, g["encoder_out"], COMPONENT_TOL, "encoder_out")
    assert_rel_close(vae.quant_conv(encoder_out), g["moments"], COMPONENT_TOL, "moments")
    assert_rel_close(vae.encode(g["x"]).moments, g["moments"], COMPONENT_TOL, "EncoderOutput.moments")

    out = vae.encode(g["x"])
    assert_rel_close(out.mean, g["posterior_mean"], COMPONENT_TOL, "posterior_mean")
    assert_rel_close(out.logvar, g["posterior_logvar"], COMPONENT_TOL, "posterior_logvar")
    assert_rel_close(out.std, g["posterior_std"], COMPONENT_TOL, "posterior_std")
    assert len(out.hidden_states) == vae.num_levels + 1
    for i, hidden in enumerate(out.hidden_states):
        assert_rel_close(hidden, g[f"hidden_{i}"], COMPONENT_TOL, f"hidden_{i}")


@torch.no_grad()
def test_encode_is_per_frame_and_sample(vae, encode_golden):
    x = encode_golden["x"]
    both = vae.encode(x)
    second = vae.encode(x[1:])
    assert rel_error(second.mean, both.mean[1:]) < 1e-5
    noise = torch.randn(both.mean.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(both.sample(noise), both.mean + both.std * noise)


@pytest.mark.parametrize("num_frames", [16, 8])
@torch.no_grad()
def test_decode_matches_golden(vae, tiny_config, encode_golden, num_frames):
    g = load_golden(f"vae_decode_T{num_frames}")
    z = g["z"] / tiny_config.vae.scale_factor  # the golden z is in model space
    out = vae.decode(z, _ref_context(encode_golden, vae.num_levels))
    assert out.shape == (1, 3, num_frames, 32, 64)
    assert_rel_close(out, g["out"], COMPONENT_TOL, f"vae_decode_T{num_frames}")


@torch.no_grad()
def test_bf16_decode_close_to_fp32(tiny_config, tiny_state_dict, encode_golden):
    model = AutoencoderKLDualRef(tiny_config.vae).eval()
    model.load_state_dict(_vae_state_dict(tiny_state_dict), strict=True)
    model.to(torch.bfloat16)
    g = load_golden("vae_decode_T8")
    z = (g["z"] / tiny_config.vae.scale_factor).to(torch.bfloat16)
    refs = [r.to(torch.bfloat16) for r in _ref_context(encode_golden, model.num_levels)]
    out = model.decode(z, refs)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    # bf16 keeps 8 mantissa bits; measured ~1e-2 over the whole decoder.
    assert rel_error(out.float(), g["out"]) < 5e-2


@torch.no_grad()
def test_decode_rejects_bad_ref_context(vae, encode_golden):
    refs = _ref_context(encode_golden, vae.num_levels)
    z = torch.zeros(1, 4, 4, 4, 8)
    with pytest.raises(ValueError, match="ref_context has"):
        vae.decode(z, refs[:-1])
    with pytest.raises(ValueError, match=r"ref_context\[0\]"):
        vae.decode(z, [refs[0][:, :, :1], *refs[1:]])


def test_config_checks():
    with pytest.raises(ValueError, match="embed_dim"):
        AutoencoderKLDualRef(AutoencoderConfig(ch=32, ch_mult=(1, 2), embed_dim=8))
    with pytest.raises(ValueError, match="attn_level"):
        AutoencoderKLDualRef(AutoencoderConfig(ch=32, ch_mult=(1, 2), attn_level=(2,)))
