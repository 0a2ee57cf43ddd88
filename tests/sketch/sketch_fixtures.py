"""Tiny sketch models in the official file layouts, and synthetic drawings, for the sketch tests.

The sketch encoder mirrors the tiny-a UNet (``SketchEncoderConfig.for_unet``), so it plugs into the tiny-a
pipeline; the extractor is a 5-level, 4-filter Anime2Sketch generator. Weights are PyTorch's default
random initialisation (the official zero-initialised convs would make every residual zero).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from conftest import TINY_A, draw_key  # noqa: F401 (the sketch tests import it from here)
from toonctl.models.sketch_encoder import SketchEncoder, SketchEncoderConfig
from toonctl.models.sketch_extractor import SketchExtractor, SketchExtractorConfig

MODEL_ARGS = [
    "--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"),
    "--device", "cpu", "--steps", "2", "--size", "32x64",
]  # fmt: skip
TINY_EXTRACTOR = SketchExtractorConfig(ngf=4, num_downs=5)


def tiny_unet_config():
    from toonctl.convert.config import load_config

    return load_config(TINY_A / "config.yaml").unet


def tiny_encoder(seed: int = 0) -> SketchEncoder:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SketchEncoder(SketchEncoderConfig.for_unet(tiny_unet_config())).eval()


def tiny_extractor(seed: int = 0) -> SketchExtractor:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SketchExtractor(TINY_EXTRACTOR).eval()


def save_official(module: torch.nn.Module, path: Path, *, layout: str = "raw", prefix: str = "") -> Path:
    """Write ``module``'s weights as an official-style file.

    layout: ``raw`` (``torch.save(state_dict)``), ``wrapped`` (``{"state_dict": ...}``) or ``fp16`` (a
    safetensors file in half precision, like kijai's ``sketch_encoder-fp16.safetensors``).
    """
    state = {prefix + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    if layout == "fp16":
        from safetensors.torch import save_file

        save_file({k: v.half() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state} if layout == "wrapped" else state, path)
    return path


def draw_sketch(path: Path, x: int, *, white_on_black: bool = False, size=(128, 256)) -> Path:
    """A line drawing of a ball at horizontal position ``x`` and the ground line."""
    h, w = size
    paper, ink = ((0, 0, 0), (255, 255, 255)) if white_on_black else ((255, 255, 255), (0, 0, 0))
    img = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(img)
    d.line([0, h * 3 // 4, w, h * 3 // 4], fill=ink, width=3)
    d.ellipse([x, h // 3, x + h // 3, h * 2 // 3], outline=ink, width=4)
    img.save(path)
    return path
