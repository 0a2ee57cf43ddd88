"""Guards against non-finite numbers: a NaN or inf anywhere in a run stops it with a message naming the stage.

One ``isfinite`` reduction per stage output (text/image encoding, each sampling step, the decode), so a
run never writes a black or garbage video and exits 0.
"""

from __future__ import annotations

import torch

from toonctl.errors import NonFiniteError


def check_finite(tensor: torch.Tensor, stage: str) -> torch.Tensor:
    """Return ``tensor`` unchanged, or raise ``NonFiniteError`` naming ``stage`` if it holds NaN/inf."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"non-finite values (NaN or inf) after {stage}; nothing was written")
    return tensor
