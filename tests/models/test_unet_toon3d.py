"""ToonUNet3D against the official UNet: tiny-a goldens, the 512 checkpoint's key list, dtypes, backends,
control residuals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import COMPONENT_TOL, assert_rel_close, load_golden, rel_error, strip_prefix
from toonctl.models.attention import attention_backend
from toonctl.models.configs import UNetConfig
from toonctl.models.embeddings import timestep_embedding
from toonctl.models.unet_toon3d import ToonUNet3D

UNET_PREFIX = "model.diffusion_model."
KEYS_TSV = Path(__file__).parents[1] / "fixtures" / "tooncrafter-512-keys.tsv"
UNET_512_PARAMS = 1_438_854_980


@pytest.fixture(scope="module")
def unet(tiny_config, tiny_state_dict) -> ToonUNet3D:
    model = ToonUNet3D(tiny_config.unet).eval()
    model.load_state_dict(strip_prefix(tiny_state_dict, UNET_PREFIX), strict=True)
    return model


@pytest.fixture(scope="module")
def golden16() -> dict[str, torch.Tensor]:
    return load_golden("unet_T16")


def _run(model: ToonUNet3D, g: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(g["x"], g["t"], context=g["context"], fs=g["fs"], **kwargs)


@pytest.mark.parametrize("frames", [16, 8])
def test_matches_official_golden(unet, frames):
    # T=16: context 333 = 77 + 16*16, split per frame. T=8: 333 != 77 + 16*8, every frame sees all tokens.
    g = load_golden(f"unet_T{frames}")
    assert g["context"].shape[1] == 333
    assert_rel_close(_run(unet, g), g["out"], COMPONENT_TOL, f"unet_T{frames}")


def test_state_dict_is_the_checkpoint_layout(unet, tiny_state_dict):
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in strip_prefix(tiny_state_dict, UNET_PREFIX).items()}
    assert ours == ref


def test_512_config_on_meta_has_the_checkpoint_keys_and_size():
    with torch.device("meta"):
        model = ToonUNet3D(UNetConfig())
    rows = [line.rstrip("\n").split("\t") for line in KEYS_TSV.read_text(encoding="utf-8").splitlines()[1:]]
    ref = [
        (key[len(UNET_PREFIX) :], tuple(int(n) for n in shape.split("x")))
        for key, shape, *_ in rows
        if key.startswith(UNET_PREFIX)
    ]
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert len(ref) == 1516
    assert ours == ref  # same keys, shapes and order
    assert sum(p.numel() for p in model.parameters()) == UNET_512_PARAMS
    assert all(p.is_meta for p in model.parameters())

    # The shape flow at the native 320x512 resolution runs on meta tensors without any data.
    x = torch.empty(1, 8, 16, 40, 64, device="meta")
    out = model(x, torch.empty(1, dtype=torch.long, device="meta"), torch.empty(1, 333, 1024, device="meta"))
    assert out.shape == (1, 4, 16, 40, 64)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert timestep_embedding(torch.tensor([5]), 7).shape == (1, 7)  # odd width: one zero appended


def test_fs_none_means_default_fs(unet, golden16):
    g = dict(golden16)
    default = torch.full_like(g["fs"], unet.config.default_fs)
    with torch.no_grad():
        a = unet(g["x"], g["t"], context=g["context"], fs=None)
        b = unet(g["x"], g["t"], context=g["context"], fs=default)
        c = unet(g["x"], g["t"], context=g["context"], fs=g["fs"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)  # fs does condition the output


def test_context_split_per_frame_only_at_77_plus_16_t(unet):
    b, t, c = 2, 4, unet.config.context_dim
    context = torch.randn(b, 77 + 16 * t, c)
    per_frame = unet._frame_context(context, t)
    assert per_frame.shape == (b * t, 77 + 16, c)
    for s in range(b):
        for f in range(t):
            row = per_frame[s * t + f]  # batch-major fold
            torch.testing.assert_close(row[:77], context[s, :77], rtol=0, atol=0)
            torch.testing.assert_close(row[77:], context[s, 77 + 16 * f : 77 + 16 * (f + 1)], rtol=0, atol=0)
    other = torch.randn(b, 77 + 16 * t + 1, c)
    repeated = unet._frame_context(other, t)
    torch.testing.assert_close(repeated, other.repeat_interleave(t, dim=0), rtol=0, atol=0)


def _control_shapes(model: ToonUNet3D, g: dict[str, torch.Tensor]) -> list[torch.Size]:
    """Shapes of the skip tensors and of the middle block's output, from hooks."""
    shapes: list[torch.Size] = []
    hooks = [block.register_forward_hook(lambda m, a, out: shapes.append(out.shape)) for block in model.input_blocks]
    hooks.append(model.middle_block.register_forward_hook(lambda m, a, out: shapes.append(out.shape)))
    try:
        _run(model, g)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def test_control_residuals(unet, golden16):
    g = golden16
    shapes = _control_shapes(unet, g)
    assert len(shapes) == unet.num_control_residuals == len(unet.input_blocks) + 1
    reference = _run(unet, g)

    zeros = [torch.zeros(s) for s in shapes]
    torch.testing.assert_close(_run(unet, g, control_residuals=zeros), reference, rtol=0, atol=0)

    gen = torch.Generator().manual_seed(0)
    residuals = [0.1 * torch.randn(s, generator=gen) for s in shapes]
    assert rel_error(_run(unet, g, control_residuals=residuals), reference) > 1e-3

    with pytest.raises(ValueError, match="control residuals"):
        _run(unet, g, control_residuals=residuals[:-1])


@pytest.mark.parametrize("index", ["middle", 0, 5])
def test_control_residual_targets(unet, golden16, index):
    """Element -1 is added after the middle block; element i to skip i (consumed by output block n-1-i)."""
    g = golden16
    shapes = _control_shapes(unet, g)
    n_skips = len(shapes) - 1
    slot = n_skips if index == "middle" else index
    residual = 0.1 * torch.randn(shapes[slot], generator=torch.Generator().manual_seed(1))
    controls = [torch.zeros(s) for s in shapes]
    controls[slot] = residual
    actual = _run(unet, g, control_residuals=controls)

    if index == "middle":
        hook = unet.middle_block.register_forward_hook(lambda m, a, out: out + residual)
    else:

        def add_to_skip(module, args):
            h = args[0].clone()
            h[:, -residual.shape[1] :] += residual  # the skip is the second half of cat([h, skip])
            return (h, *args[1:])

        hook = unet.output_blocks[n_skips - 1 - index].register_forward_pre_hook(add_to_skip)
    try:
        expected = _run(unet, g)
    finally:
        hook.remove()
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_weights_stay_close_to_fp32(tiny_config, tiny_state_dict, golden16, dtype, tol):
    model = ToonUNet3D(tiny_config.unet).eval()
    model.load_state_dict(strip_prefix(tiny_state_dict, UNET_PREFIX), strict=True)
    model = model.to(dtype)
    assert model.dtype == dtype
    out = _run(model, golden16)
    assert out.dtype == golden16["x"].dtype  # returned in the input's dtype
    assert torch.isfinite(out).all()
    assert rel_error(out, golden16["out"]) < tol


def test_math_and_sdpa_backends_agree(unet, golden16):
    sdpa = _run(unet, golden16)
    with attention_backend("math"):
        math_out = _run(unet, golden16)
    assert rel_error(math_out, sdpa) <= 1e-5


def test_rejects_bad_inputs(unet, golden16):
    g = golden16
    with pytest.raises(ValueError, match="x must be"):
        unet(g["x"][:, :4], g["t"], context=g["context"])
    with pytest.raises(ValueError, match="divisible"):
        unet(g["x"][..., :3, :], g["t"], context=g["context"])
    with pytest.raises(ValueError, match="context must be"):
        unet(g["x"], g["t"], context=g["context"][:1])
