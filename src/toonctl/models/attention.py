"""Multi-head attention math shared by every network, with swappable backends.

The official code mixes xformers (spatial attention, the VAE's attention blocks) with explicit
einsum/softmax (temporal attention, the Resampler) and ``nn.MultiheadAttention`` (OpenCLIP). They all
compute ``softmax(q k^T * scale) v``; the backend only changes low-order bits. Every module here calls
``attention`` and the backend is chosen once, globally:

* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``;
* ``"math"``: explicit matmul + softmax with the softmax in fp32 (what the official einsum path does
  under autocast), for parity checks and debugging;
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (CUDA only, optional dependency).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "math", "xformers")
_backend = "sdpa"


def get_attention_backend() -> str:
    return _backend


def set_attention_backend(name: str) -> None:
    """Select the attention backend for every module ("auto" picks xformers when usable, else sdpa)."""
    global _backend
    if name == "auto":
        name = "xformers" if xformers_available() else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)} or auto")
    if name == "xformers" and not xformers_available():
        raise ValueError("the xformers backend needs the xformers package and a CUDA device")
    _backend = name


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Temporarily switch the backend (``with attention_backend("math"): ...``)."""
    previous = _backend
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


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
    if backend == "xformers" and q.is_cuda:
        import xformers.ops as xops

        b, h, n, d = q.shape
        # xformers wants (B, N, heads, D); a mask must be materialised per head.
        bias = None if mask is None else mask.to(q.dtype).expand(b, h, n, k.shape[2])
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, scale=scale
        )
        return out.transpose(1, 2)
    if backend == "math" or (backend == "xformers" and not q.is_cuda):
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
