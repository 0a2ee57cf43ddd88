"""The xformers path without a GPU (issue 9.2): a fake ``xformers`` that enforces the documented alignment
rule checks which calls reach it, and that ``auto`` probes it once and falls back to SDPA when it is broken.

The real kernels need CUDA and the real package; this session has neither, so the fake stands in for them.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from toonctl.models import attention as attn
from toonctl.models.clip_encoders import OpenCLIPTextEncoder


class FakeOps(types.ModuleType):
    """``xformers.ops`` with ``memory_efficient_attention`` computed by SDPA, refusing what xformers refuses:
    a tensor ``attn_bias`` whose row stride (``stride(-2)``) is not a multiple of 8."""

    def __init__(self, *, broken: bool = False) -> None:
        super().__init__("xformers.ops")
        self.broken = broken
        self.calls: list[tuple] = []

    def memory_efficient_attention(self, q, k, v, attn_bias=None, scale=None):  # (B, N, heads, D)
        self.calls.append((tuple(q.shape), None if attn_bias is None else tuple(attn_bias.stride())))
        if self.broken:
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        if torch.is_tensor(attn_bias) and attn_bias.stride(-2) % 8:
            raise ValueError(
                "No operator found for `memory_efficient_attention_forward`: attn_bias.stride(-2) % 8 != 0"
            )
        bias = attn_bias.transpose(1, 2) if torch.is_tensor(attn_bias) else None
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2).float(),
            k.transpose(1, 2).float(),
            v.transpose(1, 2).float(),
            attn_mask=bias,
            scale=scale,
        )
        return out.transpose(1, 2).to(q.dtype)


@pytest.fixture
def fake_xformers(monkeypatch):
    """Install a fake ``xformers`` whose kernels "run" on the CPU; restore the backend afterwards."""

    def install(*, broken: bool = False, import_error: bool = False) -> FakeOps:
        ops = FakeOps(broken=broken)
        package = types.ModuleType("xformers")
        package.__path__ = []  # a package, so find_spec("xformers") sees it
        package.__spec__ = __import__("importlib.machinery").machinery.ModuleSpec("xformers", None, is_package=True)
        if import_error:
            monkeypatch.setitem(sys.modules, "xformers.ops", None)  # `import xformers.ops` raises ImportError
        else:
            package.ops = ops
            monkeypatch.setitem(sys.modules, "xformers.ops", ops)
        monkeypatch.setitem(sys.modules, "xformers", package)
        monkeypatch.setattr(attn, "XFORMERS_DEVICE_TYPE", "cpu")
        monkeypatch.setattr(attn, "_xformers_status", None)
        return ops

    previous = attn.get_attention_backend()
    yield install
    attn._backend = previous
    attn._xformers_status = None


def _qkv(n: int = 77, heads: int = 2, d: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, heads, n, d, generator=g) for _ in range(3))


def test_the_fake_enforces_the_rule_the_old_code_broke():
    """The text tower's causal mask expanded to (b, h, 77, 77) has strides (0, 0, 77, 1): refused."""
    q, k, v = _qkv()
    bias = torch.zeros(77, 77).triu_(1).expand(1, 2, 77, 77)
    assert bias.stride() == (0, 0, 77, 1)
    with pytest.raises(ValueError, match="No operator found"):
        FakeOps().memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)


def test_auto_probes_once_and_routes_unmasked_calls_to_xformers_masked_to_sdpa(fake_xformers):
    ops = fake_xformers()
    assert attn.set_attention_backend("auto") is None
    assert attn.get_attention_backend() == "xformers"
    assert len(ops.calls) == 1  # the probe
    attn.set_attention_backend("auto")
    assert len(ops.calls) == 1  # cached: probed once per process
    q, k, v = _qkv()
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attn.attention(q, k, v), ref)
    assert len(ops.calls) == 2
    mask = torch.full((77, 77), float("-inf")).triu_(1)
    masked = attn.attention(q, k, v, mask=mask)
    assert len(ops.calls) == 2  # the masked call did not reach xformers
    torch.testing.assert_close(masked, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_text_tower_runs_under_xformers(fake_xformers, tiny_config):
    torch.manual_seed(0)
    tower = OpenCLIPTextEncoder(tiny_config.text).eval()
    tokens = torch.randint(0, tiny_config.text.vocab_size, (2, tiny_config.text.context_length))
    with torch.no_grad():
        ref = tower(tokens)
        fake_xformers()
        attn.set_attention_backend("xformers")
        out = tower(tokens)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("kind", ["broken", "import_error"])
def test_broken_xformers_falls_back_to_sdpa_with_one_note(fake_xformers, kind):
    fake_xformers(broken=kind == "broken", import_error=kind == "import_error")
    note = attn.set_attention_backend("auto")
    assert attn.get_attention_backend() == "sdpa"
    assert note is not None and "xformers is installed but unusable" in note and "SDPA" in note
    with pytest.raises(ValueError, match="xformers attention backend is not usable"):
        attn.set_attention_backend("xformers")


def test_auto_without_xformers_is_sdpa_silently(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)
    monkeypatch.setattr(attn, "_xformers_status", None)
    previous = attn.get_attention_backend()
    try:
        assert attn.set_attention_backend("auto") is None
        assert attn.get_attention_backend() == "sdpa"
    finally:
        attn._backend = previous
        attn._xformers_status = None
