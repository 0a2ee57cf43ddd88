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


def check_model_name(name: str) -> None:
    """A converted model's name is one plain folder name: no path separators, not ``.``/``..``, not hidden.

    Raises:
        UsageError: otherwise (``--name ../../x`` or an absolute name would write outside the weights folder).
    """
    from toonctl.errors import UsageError

    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith(".") or "\0" in name:
        raise UsageError(
            f"invalid model name {name!r}: give a plain folder name (no /, not starting with a dot)",
            hint="the converted model is created inside --dest; choose the folder with --dest",
        )


def check_dest(dest: Path) -> None:
    """``dest`` is a folder that takes new files, or does not exist yet (it will be created)."""
    from toonctl.errors import OutputError
    from toonctl.io.atomic import check_writable

    if dest.exists() and not dest.is_dir():
        raise OutputError(f"cannot write into {dest}: it is a file, not a folder", hint="--dest takes a folder")
    if dest.is_dir():
        check_writable(dest / "model", folder=dest)
