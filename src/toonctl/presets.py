"""Settings of a run, as frozen dataclasses: the single source of the defaults.

``InterpolateSettings``: what to generate (the official ``scripts/run.sh`` values); ``batch`` shots override
fields from their ``shot.yaml``. ``LoadOptions``: which model to load and how (device, precision, decoder,
placement, control stages), handed to ``InterpolationPipeline.from_checkpoint``. CLI options read their
defaults from here. Importing this module does not import torch (``toonctl --help`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toonctl.errors import OptionError
from toonctl.fieldtypes import check_field_types

if TYPE_CHECKING:
    import torch

FIT_MODES = ("crop", "pad", "resize")  # how key frames of another aspect are fitted (toonctl.io.frames)
DEFAULT_DECODER = "dualref"  # the official decode (toonctl.pipelines.decoders)
OFFLOAD_MODES = ("none", "model", "sequential")  # toonctl.pipelines.placement
# Every component a pipeline can hold: the model's networks (one per checkpoint prefix, in the checkpoint's
# order: toonctl.convert.tooncrafter) and the optional control stages (toonctl.pipelines.controls).
MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "image_encoder", "image_proj")
CONTROL_COMPONENTS = ("sketch_encoder",)
COMPONENT_NAMES = (*MODEL_COMPONENTS, *CONTROL_COMPONENTS)
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
    inbetweens: int | None = None  # per segment; None keeps all the model makes (num_frames - 2)
    num_frames: int | None = None  # frames per segment, both keys included (4..16); None: the model's (16)
    fps: float = 8.0  # the official output frame rate
    size: tuple[int, int] | None = None  # (H, W); None: chosen from the key frames (native 320x512)
    fit: str = "crop"
    loop: bool = False
    exact_keys: bool = True
    quality: int | None = None  # mp4/webm crf; None: the writer's default

    def __post_init__(self) -> None:
        check_field_types(self, prefix="")  # "inbetweens: seven" in a shot.yaml: a message naming the setting
        checks = [  # (ok, message starting with the field's name)
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
            (self.num_frames is None or self.num_frames >= 4, f"num_frames must be >= 4, got {self.num_frames}"),
            (
                None in (self.num_frames, self.inbetweens) or self.inbetweens <= self.num_frames - 2,
                f"inbetweens must be at most num_frames - 2 = {(self.num_frames or 2) - 2}, got {self.inbetweens}",
            ),
            (self.fps > 0, f"fps must be > 0, got {self.fps}"),
            (self.fit in FIT_MODES, f"fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}"),
            (self.quality is None or 0 <= self.quality <= 51, f"quality must be in 0..51, got {self.quality}"),
            (self.size is None or len(self.size) == 2, f"size must be HEIGHTxWIDTH, got {self.size!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message, option=message.split()[0])

    def updated(self, overrides: dict[str, Any]) -> InterpolateSettings:
        """A copy with ``overrides`` applied (unknown names are an error, lists become tuples)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise OptionError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return replace(self, **values)


def parse_size(text: str) -> tuple[int, int]:
    """``"320x512"`` (height x width) -> ``(320, 512)``."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise OptionError(f"size must look like HEIGHTxWIDTH (e.g. 320x512), got {text!r}", option="size")
    return int(parts[0]), int(parts[1])


def parse_lora(text: str) -> tuple[Path, float]:
    """``--lora FILE[:SCALE]`` -> ``(path, scale)``, scale 1 by default. Only a last ``:`` followed by a number is
    a scale, so a path with colons (``C:\\x.safetensors``) is a path."""
    import math

    head, sep, tail = text.rpartition(":")
    path, scale = text, 1.0
    if sep:
        try:
            path, scale = head, float(tail)
        except ValueError:
            pass
    if not path:
        raise OptionError(f"--lora {text!r}: no file given; use FILE or FILE:SCALE", option="lora")
    if not math.isfinite(scale):
        raise OptionError(f"--lora {text!r}: the scale must be a finite number", option="lora")
    return Path(path), scale


@dataclass(frozen=True)
class LoadOptions:
    """How to load the model: one object from the CLI's model options to ``from_checkpoint``.

    Attributes:
        weights: a checkpoint file, a converted folder or a folder to search (None: the weights folder).
        config: the architecture (official yaml or ``config.json``; None: found beside the weights).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ... or a ``torch.device``.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``, ``autocast`` (fp32
            weights under fp16 autocast: the official regime), a ``torch.dtype``, or None (a checkpoint
            file in fp32, a converted folder as stored).
        decoder: the decoder stage (``toonctl.pipelines.decoders.parse_decoder``).
        offload: one of ``OFFLOAD_MODES``.
        device_map: ``"unet=cuda:1,vae=cuda:0"`` or ``{component: device}``.
        attention: ``auto``, ``sdpa``, ``math``, ``xformers``; None leaves the current backend.
        compile: ``torch.compile`` the UNet.
        controls: control stages to load with the model, ``{name: weights path or None}`` (None: found
            beside the model or in the weights folder); names from ``CONTROL_COMPONENTS``.
        loras: LoRA adapter files merged into the UNet at load, ``(path, scale)`` in order (``parse_lora``;
            ``toonctl.training.lora.merge_lora_file``).
    """

    weights: Path | None = None
    config: Path | None = None
    device: str | torch.device = "auto"
    dtype: str | torch.dtype | None = "auto"
    decoder: str = DEFAULT_DECODER
    offload: str = "none"
    device_map: str | dict[str, str] | None = None
    attention: str | None = "auto"
    compile: bool = False
    controls: dict[str, Path | None] = field(default_factory=dict)
    loras: tuple[tuple[Path, float], ...] = ()

    def with_controls(self, **controls: Path | None) -> LoadOptions:
        """A copy that also loads these control stages (``sketch_encoder=None``: found like the model)."""
        return replace(self, controls={**self.controls, **controls})
