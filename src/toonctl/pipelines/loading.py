"""From ``LoadOptions`` to a load plan: every load option checked and resolved once, before any weight is read.

``plan_load`` turns the user's words (``auto``, ``bf16``, ``autocast``, ``chunked:8:4``, ``unet=cuda:1``) into
torch objects and pipeline stages, and finds the weights of the model and of its control stages.
``InterpolationPipeline.from_checkpoint`` builds from the plan; the CLI plans first to report bad options
(exit 2) and to print what it is about to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toonctl.errors import OptionError
from toonctl.models.configs import ToonCrafterConfig
from toonctl.pipelines.decoders import FrameDecoder
from toonctl.presets import OFFLOAD_MODES, LoadOptions

# What ``from_checkpoint`` does without options: CPU, float32 (a converted folder: as stored), and the
# attention backend left as it is.
LIBRARY_DEFAULTS = LoadOptions(device="cpu", dtype=None, attention=None)


@dataclass(frozen=True)
class LoadPlan:
    """``LoadOptions`` resolved: where every file is and which torch objects and stages to build.

    Attributes:
        checkpoint, config: the model's weights and architecture.
        device: the execution device; dtype: the weights' dtype (None: as stored / float32).
        autocast: the autocast dtype (float16 for ``--dtype autocast``), or None.
        decoder: the decoder stage; offload, device_map: the placement (``pipelines/placement.py``).
        attention: the attention backend to select (None: leave it); compile: ``torch.compile`` the UNet.
        controls: ``{control name: weights file}``.
        loras: LoRA adapter files merged into the UNet at load, ``(path, scale)`` in order.
        notes: things the user should know (e.g. xformers installed but unusable, so SDPA is used).
    """

    checkpoint: Path
    config: ToonCrafterConfig
    device: torch.device
    dtype: torch.dtype | None
    autocast: torch.dtype | None
    decoder: FrameDecoder
    offload: str = "none"
    device_map: dict[str, str] = field(default_factory=dict)
    attention: str | None = None
    compile: bool = False
    controls: dict[str, Path] = field(default_factory=dict)
    loras: tuple[tuple[Path, float], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def direct(self) -> bool:
        """Every component loads straight onto the execution device (no offload, no device map)."""
        return self.offload == "none" and not self.device_map

    def describe(self) -> str:
        """``Loading PATH on DEVICE (PRECISION[, offload MODE])[ with CONTROL FILES]`` for the CLI's log."""
        if self.autocast is not None:
            precision = f"fp32 weights, {_name(self.autocast)} autocast"
        else:
            precision = "as stored" if self.dtype is None else _name(self.dtype)
        offload = "" if self.offload == "none" else f", offload {self.offload}"
        controls = f" with {', '.join(p.name for p in self.controls.values())}" if self.controls else ""
        loras = "".join(f" + LoRA {path.name} ({scale:g})" for path, scale in self.loras)
        return f"Loading {self.checkpoint} on {self.device} ({precision}{offload}){controls}{loras}"


def plan_load(
    options: LoadOptions,
    checkpoint: str | Path | None = None,
    config: str | Path | ToonCrafterConfig | None = None,
) -> LoadPlan:
    """Check and resolve ``options`` (``checkpoint``/``config`` given: instead of finding them).

    Raises:
        OptionError: a bad device, dtype, decoder, offload mode, device map, attention backend or control
            name (the error names the option).
        WeightsNotFoundError, ConfigError: the weights or the config cannot be found or read.
    """
    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.pipelines.controls import CONTROLS, find_control_weights
    from toonctl.pipelines.decoders import parse_decoder
    from toonctl.pipelines.placement import parse_device_map
    from toonctl.weights import config_for, resolve_weights

    device = _checked("device", lambda: resolve_device(options.device))
    autocast = torch.float16 if options.dtype == "autocast" else None  # fp32 weights under fp16 autocast
    if autocast is not None:
        dtype = torch.float32
    elif options.dtype is None:
        dtype = None  # as stored
    else:
        dtype = _checked("dtype", lambda: resolve_dtype(options.dtype, device))
    decoder = _checked("decoder", lambda: parse_decoder(options.decoder))
    if options.offload not in OFFLOAD_MODES:
        raise OptionError(f"choose one of {', '.join(OFFLOAD_MODES)}, got {options.offload!r}", option="offload")
    device_map = _checked("device_map", lambda: parse_device_map(options.device_map))
    if device_map and options.offload != "none":
        raise OptionError("a device map cannot be combined with offloading", option="device_map")
    note = None if options.attention is None else _checked("attention", lambda: _check_attention(options.attention))
    unknown = sorted(set(options.controls) - set(CONTROLS))
    if unknown:
        raise OptionError(f"unknown control stages {unknown}; known: {', '.join(CONTROLS)}", option="controls")
    if checkpoint is None:
        checkpoint, found = resolve_weights(options.weights, config or options.config)
    else:
        checkpoint, found = Path(checkpoint), config_for(checkpoint, config or options.config)
    controls = {name: find_control_weights(name, given, checkpoint) for name, given in options.controls.items()}
    loras = tuple((Path(path), float(scale)) for path, scale in options.loras)
    missing = [str(path) for path, _ in loras if not path.is_file()]
    if missing:
        from toonctl.pipelines.lora import LoraFileError

        raise LoraFileError(f"LoRA file not found: {', '.join(missing)}", hint="check the --lora path")
    return LoadPlan(
        checkpoint=Path(checkpoint), config=found, device=device, dtype=dtype, autocast=autocast, decoder=decoder,
        offload=options.offload, device_map=device_map, attention=options.attention, compile=options.compile,
        controls=controls, loras=loras, notes=(note,) if note else (),
    )  # fmt: skip


def check_fits(plan: LoadPlan, frame_size: tuple[int, int]) -> None:
    """Refuse a run of ``frame_size`` (H, W) frames that cannot fit in memory, before anything is loaded.

    ``toonctl.memory``'s lower bound (weights + the full-resolution decode) against the free memory of
    ``plan.device``; a device map spreads the model over devices and is not estimated.

    Raises:
        OutOfMemoryError: it needs more than is free (the message says how much, the hint what to change).
    """
    from toonctl.memory import check_memory, estimate_memory

    if plan.device_map:
        return
    estimate = estimate_memory(
        plan.checkpoint, plan.config.vae.ch, frame_size, plan.config.unet.temporal_length,
        device_type=plan.device.type, dtype_bytes=(plan.dtype or torch.float32).itemsize, offload=plan.offload,
        decode_frames=getattr(plan.decoder, "chunk", None),
    )  # fmt: skip
    check_memory(estimate, plan.device, what=f"a {frame_size[0]}x{frame_size[1]} (HxW) run")


def _checked(option: str, resolve: Callable[[], object]):
    """``resolve()``, its ``ValueError`` reported as a bad value of ``option``."""
    try:
        return resolve()
    except ValueError as exc:  # OptionError too: named after the option being resolved
        raise OptionError(str(exc), option=option, hint=getattr(exc, "hint", None)) from None


def _check_attention(name: str) -> str | None:
    """Raise ``ValueError`` for a backend that is unknown or unusable here, else return ``set_attention_backend``'s
    note (the current backend is kept)."""
    from toonctl.models.attention import get_attention_backend, set_attention_backend

    previous = get_attention_backend()
    try:
        return set_attention_backend(name)
    finally:
        set_attention_backend(previous)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
