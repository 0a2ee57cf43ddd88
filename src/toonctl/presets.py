"""Settings of an interpolation run: one frozen dataclass, the single source of the defaults.

The generation defaults are the official ``scripts/run.sh`` values. CLI options read their defaults
from here, and ``batch`` shots override fields from their ``shot.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from toonctl.fieldtypes import check_field_types

FIT_MODES = ("crop", "pad", "resize")  # how key frames of another aspect are fitted (toonctl.io.frames)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0..2**64-1


@dataclass(frozen=True)
class InterpolateSettings:
    prompt: str = ""
    seed: int = 123
    steps: int = 50
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.7
    eta: float = 1.0
    frame_stride: int = 10  # the fs condition: smaller means larger motion
    inbetweens: int | None = None  # per segment; None keeps all the model makes (14)
    fps: float = 8.0  # the official output frame rate
    size: tuple[int, int] | None = None  # (H, W); None: chosen from the key frames (native 320x512)
    fit: str = "crop"
    loop: bool = False
    exact_keys: bool = True
    quality: int | None = None  # mp4/webm crf; None: the writer's default

    def __post_init__(self) -> None:
        check_field_types(self, prefix="")  # "inbetweens: seven" in a shot.yaml: a message naming the setting
        checks = [
            (
                type(self.seed) is int and 0 <= self.seed <= MAX_SEED,
                f"seed must be in 0..{MAX_SEED}, got {self.seed!r}",
            ),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.guidance_scale > 0, f"guidance_scale must be > 0, got {self.guidance_scale}"),
            (0 <= self.guidance_rescale <= 1, f"guidance_rescale must be in [0, 1], got {self.guidance_rescale}"),
            (self.eta >= 0, f"eta must be >= 0, got {self.eta}"),
            (self.frame_stride >= 1, f"frame_stride must be >= 1, got {self.frame_stride}"),
            (self.inbetweens is None or self.inbetweens >= 0, f"inbetweens must be >= 0, got {self.inbetweens}"),
            (self.fps > 0, f"fps must be > 0, got {self.fps}"),
            (self.fit in FIT_MODES, f"fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}"),
            (self.quality is None or 0 <= self.quality <= 51, f"quality must be in 0..51, got {self.quality}"),
            (self.size is None or len(self.size) == 2, f"size must be HEIGHTxWIDTH, got {self.size!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def updated(self, overrides: dict[str, Any]) -> InterpolateSettings:
        """A copy with ``overrides`` applied (unknown names are an error, lists become tuples)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return replace(self, **values)


def parse_size(text: str) -> tuple[int, int]:
    """``"320x512"`` (height x width) -> ``(320, 512)``."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like HEIGHTxWIDTH (e.g. 320x512), got {text!r}")
    return int(parts[0]), int(parts[1])
