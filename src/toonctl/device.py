"""Device and dtype selection: the one place that asks torch what hardware there is."""

from __future__ import annotations

import torch

from toonctl.dtypes import DTYPE_NAMES, torch_dtype
from toonctl.errors import OptionError

DTYPES = {short: torch_dtype(short) for short in DTYPE_NAMES}  # "fp32" -> torch.float32, ...


def parse_device(name: str) -> torch.device:
    """``torch.device(name)``, with a ``ValueError`` naming the usual choices for a misspelt one."""
    try:
        return torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {name!r}; use cpu, cuda or cuda:N", option="device") from None


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks the first CUDA device when there is one, else the CPU. Raises ``ValueError`` for an
    unknown name or a CUDA device this machine does not have."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {name!r} requested but CUDA is not available", option="device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise OptionError(f"device {name!r} requested but this machine has {count} CUDA device(s)", option="device")
    return device


def release_memory(device: torch.device) -> None:
    """Return cached blocks to the driver after a component left ``device``."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def resolve_dtype(name: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """``fp32``/``bf16``/``fp16`` (or ``auto``: bf16 on CUDA, fp32 on the CPU, where bf16 convolutions
    are two orders of magnitude slower)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise OptionError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)} or auto", option="dtype")
    return DTYPES[name]
