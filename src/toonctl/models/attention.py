"""Multi-head attention math shared by every network, with swappable backends.

The official code mixes xformers (spatial attention, the VAE's attention blocks) with explicit
einsum/softmax (temporal attention, the Resampler) and ``nn.MultiheadAttention`` (OpenCLIP). They all
compute ``softmax(q k^T * scale) v``; the backend only changes low-order bits. Every module here calls
``attention`` and the backend is chosen once, globally:

* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``;
* ``"math"``: explicit matmul + softmax with the softmax in fp32 (what the official einsum path does
  under autocast), for parity checks and debugging;
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (CUDA only, optional dependency) for
  unmasked calls. Masked calls (the CLIP text tower's causal mask) go to SDPA even then: xformers wants
  an additive bias whose last-dim stride is a multiple of 8 (16-bit dtypes), and the text tower's
  expanded ``(B, heads, 77, 77)`` mask is not; the text tower runs once per prompt, not in the hot loop.

``auto`` picks xformers only after one tiny test call on the GPU succeeded (an installed but broken
xformers, e.g. built for another torch or CUDA, falls back to SDPA with a note saying why).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "math", "xformers")
_backend = "sdpa"
# The device type xformers' kernels run on (tests point it at "cpu" together with a fake xformers module).
XFORMERS_DEVICE_TYPE = "cuda"


def get_attention_backend() -> str:
    return _backend


def set_attention_backend(name: str) -> str | None:
    """Select the attention backend for every module ("auto": xformers when usable, else sdpa).

    Returns a note for the user when ``auto`` found xformers installed but unusable (else None).
    """
    global _backend
    note = None
    if name == "auto":
        usable, reason = xformers_status()
        name = "xformers" if usable else "sdpa"
        if reason is not None and _xformers_installed() and _xformers_device_present():
            note = f"xformers is installed but unusable ({reason}); using PyTorch SDPA attention"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)} or auto")
    if name == "xformers":
        usable, reason = xformers_status()
        if not usable:
            raise ValueError(f"the xformers attention backend is not usable: {reason}")
    _backend = name
    return note


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Temporarily switch the backend (``with attention_backend("math"): ...``)."""
    global _backend
    previous = _backend
    set_attention_backend(name)
    try:
        yield
    finally:
        _backend = previous


def xformers_available() -> bool:
    """True when xformers is installed, a CUDA device is present and a tiny test call works."""
    return xformers_status()[0]


_xformers_status: tuple[bool, str | None] | None = None


def xformers_status() -> tuple[bool, str | None]:
    """``(usable, reason it is not)``: import xformers, then one tiny fp16 call on the GPU (cached per process)."""
    global _xformers_status
    if _xformers_status is None:
        _xformers_status = _probe_xformers()
    return _xformers_status


def _xformers_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("xformers") is not None


def _xformers_device_present() -> bool:
    return XFORMERS_DEVICE_TYPE != "cuda" or torch.cuda.is_available()


def _probe_xformers() -> tuple[bool, str | None]:
    try:
        import xformers.ops as xops
    except Exception as exc:  # ImportError, or a broken build raising anything at import
        return False, f"cannot import xformers ({type(exc).__name__}: {exc})"
    if not _xformers_device_present():
        return False, "no CUDA device"
    try:
        q = torch.zeros(1, 8, 1, 64, device=XFORMERS_DEVICE_TYPE, dtype=torch.float16)  # (B, N, heads, D)
        out = xops.memory_efficient_attention(q, q, q)
        if tuple(out.shape) != tuple(q.shape):
            return False, f"the test call returned shape {tuple(out.shape)}"
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return False, f"{type(exc).__name__}: {first_line}"[:200]
    return True, None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` per head.

    Args:
        q: ``(B, heads, Nq, D)``.
        k, v: ``(B, heads, Nk, D)``.
        scale: defaults to ``D ** -0.5``.
        mask: additive float mask broadcastable to ``(B, heads, Nq, Nk)`` (e.g. ``-inf`` above the
            diagonal for causal attention), or None.

    Returns:
        ``(B, heads, Nq, D)``.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    backend = _backend
    on_xformers_device = q.device.type == XFORMERS_DEVICE_TYPE
    if backend == "xformers" and on_xformers_device and mask is None:
        import xformers.ops as xops

        # xformers wants (B, N, heads, D). Masked calls take the SDPA path below (see the module docstring).
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)
    if backend == "math" or (backend == "xformers" and not on_xformers_device):
        sim = torch.matmul(q, k.transpose(-1, -2)) * scale
        if mask is not None:
            sim = sim + mask
        # Softmax in fp32 as the official einsum path does under autocast, then back to q's dtype.
        probs = sim.float().softmax(dim=-1).to(q.dtype)
        return torch.matmul(probs, v)
    attn_mask = None if mask is None else mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, heads*D) -> (B, heads, N, D)``."""
    b, n, hd = x.shape
    return x.view(b, n, heads, hd // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, D) -> (B, N, heads*D)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)
