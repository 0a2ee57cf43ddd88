"""The weights folder and the official files: names, sizes, where they live. No torch here."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WEIGHTS_DIR = Path("weights")
WEIGHTS_ENV = "TOONCTL_WEIGHTS"
HF_REPO = "Doubiiu/ToonCrafter"
CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt", ".bin")
SIZE_TOLERANCE = 0.03  # the Hub lists sizes to three digits; exact byte counts are not recorded here


@dataclass(frozen=True)
class OfficialFile:
    """One file of ``Doubiiu/ToonCrafter``. ``approx_size`` is the Hub's listed size (decimal units)."""

    name: str
    approx_size: int
    description: str


OFFICIAL_FILES: dict[str, OfficialFile] = {
    f.name: f
    for f in (
        OfficialFile("model.ckpt", 10_500_000_000, "ToonCrafter-512 interpolation model (fp32, official layout)"),
        OfficialFile("sketch_encoder.ckpt", 1_460_000_000, "sketch encoder for sketch-guided interpolation"),
        OfficialFile("sketch_extractor.pth", 218_000_000, "line-art extractor (Anime2Sketch)"),
    )
}
MODEL_FILES = ("model.ckpt",)
SKETCH_FILES = ("sketch_encoder.ckpt", "sketch_extractor.pth")
EXTRACTOR_FILES = ("sketch_extractor.pth",)  # the sketch command's extractor (Anime2Sketch)

ByteProgress = Callable[[int, int], None]  # (bytes done, bytes total)
ComponentProgress = Callable[[str, int, int], None]  # (component, index from 1, count)


def weights_dir() -> Path:
    """The weights folder: ``$TOONCTL_WEIGHTS`` when set, else ``weights/`` under the current directory."""
    return Path(os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR)


def human_size(n: int) -> str:
    """``10500000000`` -> ``"10.5 GB"`` (decimal units, as the Hub lists them)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
