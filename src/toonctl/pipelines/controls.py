"""Control stages as pipeline components: networks beside the model that steer the UNet.

The sketch encoder is the one control network today (depth or pose would be others). A control component is
loaded with the model (``LoadOptions.controls``: its weights found like the model's, ``find_weights_file``),
placed, offloaded and device-mapped like the model's own networks (``ComponentPlacement``), and held by the
pipeline in ``pipe.controls``. A task wraps it, per run, into a ``ControlStage`` (``samplers.guidance``) that
knows the run's inputs: ``SketchControl`` (``pipelines/sketch.py``) for the sketch encoder. Several stages
steer one run together through ``combine_controls`` (their residuals add up).

Adding a control type: a ``ControlSpec`` here, its name in ``presets.CONTROL_COMPONENTS``, and its
``ControlStage`` wrapper beside the task that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.models.configs import ToonCrafterConfig
from toonctl.samplers.guidance import ControlStage


@dataclass(frozen=True)
class ControlSpec:
    """One kind of control network.

    Attributes:
        name: the component name (``pipe.controls[name]``, ``--device-map name=...``).
        files: file names searched beside the model and in the weights folder, in order.
        option: the CLI flag that names its weights file (for messages).
        load: ``(path, model config, device, dtype) -> module`` built to fit the model's UNet.
    """

    name: str
    files: tuple[str, ...]
    option: str
    load: Callable[[Path, ToonCrafterConfig, torch.device | str, torch.dtype], nn.Module]


def _load_sketch_encoder(path: Path, config: ToonCrafterConfig, device, dtype) -> nn.Module:
    from toonctl.models.sketch_encoder import SketchEncoderConfig, load_sketch_encoder

    return load_sketch_encoder(path, SketchEncoderConfig.for_unet(config.unet), device=device, dtype=dtype)


CONTROLS: dict[str, ControlSpec] = {
    spec.name: spec
    for spec in (
        # the official file, and kijai's fp16 copy
        ControlSpec(
            "sketch_encoder", ("sketch_encoder.ckpt", "sketch_encoder-fp16.safetensors"), "--sketch-encoder",
            _load_sketch_encoder,
        ),
    )
}  # fmt: skip  # the same names as presets.CONTROL_COMPONENTS (tests/test_layering.py checks)


def find_control_weights(name: str, given: str | Path | None, model_weights: str | Path | None) -> Path:
    """The weights file of control ``name``: ``given``, else found beside ``model_weights`` or in weights/."""
    from toonctl.weights import find_weights_file

    spec = CONTROLS[name]
    return find_weights_file(given, spec.files, beside=model_weights, option=spec.option)


def load_control(
    name: str, path: str | Path, config: ToonCrafterConfig, *, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:  # fmt: skip
    """Load control network ``name`` from ``path`` for the model of ``config``, frozen, in eval mode."""
    return CONTROLS[name].load(Path(path), config, device, dtype).eval().requires_grad_(False)


class CombinedControl:
    """Several ``ControlStage``s steering one run: their residuals are summed (None when none steers)."""

    def __init__(self, stages: Sequence[ControlStage]) -> None:
        self.stages = list(stages)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor] | None:
        total: list[torch.Tensor] | None = None
        for stage in self.stages:
            residuals = stage(x, t, context)
            if residuals is None:
                continue
            total = list(residuals) if total is None else [a + b for a, b in zip(total, residuals, strict=True)]
        return total


def combine_controls(control: ControlStage | Sequence[ControlStage] | None) -> ControlStage | None:
    """One stage for ``pipe(..., control=...)``: a stage, several (summed), or None."""
    if control is None or callable(control):
        return control
    stages = [c for c in control if c is not None]
    if not stages:
        return None
    return stages[0] if len(stages) == 1 else CombinedControl(stages)
