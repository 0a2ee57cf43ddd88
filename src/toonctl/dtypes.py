"""The floating dtypes toonctl works in: one table, from the short names users type to torch's names.

``fp32``/``bf16``/``fp16`` are the spellings of ``--dtype`` and ``weights import --dtype``; ``float32``/... are
torch's, stored in a converted folder's ``config.json``. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toonctl.errors import OptionError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # short name -> torch's name


def torch_dtype(name: str) -> torch.dtype:
    """``"fp16"`` or ``"float16"`` -> ``torch.float16``; ``ValueError`` naming the choices otherwise."""
    import torch

    long = DTYPE_NAMES.get(name, name)
    if long not in DTYPE_NAMES.values():
        raise OptionError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}", option="dtype")
    return getattr(torch, long)


def short_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"fp16"``."""
    for short, long in DTYPE_NAMES.items():
        if str(dtype) == f"torch.{long}":
            return short
    raise ValueError(f"unsupported dtype {dtype}; toonctl works in {', '.join(DTYPE_NAMES)}")


def long_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"`` (the spelling stored in ``config.json``)."""
    return DTYPE_NAMES[short_name(dtype)]
