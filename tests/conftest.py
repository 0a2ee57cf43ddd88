"""Shared fixtures: the tiny-a golden set (copied from the official implementation's parity run).

``tests/fixtures/tiny-a`` holds a tiny ToonCrafter in the official checkpoint layout (``model.safetensors``,
``config.yaml``) and tensors the official code computed from it (see ``tests/fixtures/README.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
TINY_A = FIXTURES / "tiny-a"

# Tolerances of the golden README (max|a-b| / max|ref| per tensor).
COMPONENT_TOL = 1e-4
PREPROCESS_TOL = 2e-4
E2E_TOL = 1e-3
SCHEDULE_TOL = 1e-6


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """Tensors of ``tests/fixtures/tiny-a/<name>.safetensors``."""
    return load_file(TINY_A / f"{name}.safetensors")


def golden_meta() -> dict:
    return json.loads((TINY_A / "meta.json").read_text(encoding="utf-8"))


def rel_error(actual: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|a - b| / max|ref|``, the golden set's metric."""
    actual = actual.detach().double().cpu()
    ref = ref.detach().double().cpu()
    return ((actual - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def assert_rel_close(actual: torch.Tensor, ref: torch.Tensor, tol: float, name: str = "") -> None:
    assert tuple(actual.shape) == tuple(ref.shape), f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    err = rel_error(actual, ref)
    assert err <= tol, f"{name}: max|a-b|/max|ref| = {err:.3g} > {tol:g}"


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="session")
def tiny_config():
    from toonctl.convert.config import load_config

    return load_config(TINY_A / "config.yaml")


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    """The official-layout state dict of tiny-a (read-only: do not modify the tensors)."""
    return load_file(TINY_A / "model.safetensors")


def draw_key(path: Path, x: int, colour=(220, 50, 50), size=(128, 256)) -> Path:
    """A flat-colour cartoon key drawing (sky, ground, a ball at horizontal position ``x``)."""
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.new("RGB", (w, h), (150, 205, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([0, h * 3 // 4, w, h], fill=(120, 190, 90), outline=(20, 20, 20), width=3)
    d.ellipse([x, h // 3, x + h // 3, h * 2 // 3], fill=colour, outline=(20, 20, 20), width=4)
    img.save(path)
    return path
