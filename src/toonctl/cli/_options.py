"""Options shared by the commands: one definition each, the same flag names everywhere.

Defaults come from ``toonctl.presets`` (``InterpolateSettings``, ``LoadOptions``); ranges are checked by Typer
(exit 2). ``settings_from_options`` and ``load_options`` build the two settings objects from a command's
parameters, so a command declares its options and passes ``locals()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.presets import COMPONENT_NAMES, FIT_MODES, MAX_SEED, InterpolateSettings, LoadOptions, parse_lora

D = InterpolateSettings()
L = LoadOptions()
MODEL = "Model"
GENERATION = "Generation"
OUTPUT = "Output"


def _check_keyframes(paths: list[Path]) -> list[Path]:
    if len(paths) < 2:
        raise typer.BadParameter(f"give two or more key frames, got {len(paths)}")
    return paths


KeyframesArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="KEYFRAMES",
        help="Key frames in order (two or more images).",
        show_default=False,
        callback=_check_keyframes,
    ),
]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="Text prompt.", rich_help_panel=GENERATION)]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed", min=0, max=MAX_SEED, help="Random seed (same seed, same result).", rich_help_panel=GENERATION
    ),
]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, max=1000, help="DDIM steps.", rich_help_panel=GENERATION)]
GuidanceScaleOpt = Annotated[
    float,
    typer.Option(
        "--guidance-scale", min=0.0, max=50.0, help="Classifier-free guidance scale.", rich_help_panel=GENERATION
    ),
]
GuidanceRescaleOpt = Annotated[
    float,
    typer.Option(
        "--guidance-rescale", min=0.0, max=1.0, help="Guidance rescale (0 = off).", rich_help_panel=GENERATION
    ),
]
EtaOpt = Annotated[
    float,
    typer.Option(
        "--eta",
        min=0.0,
        max=1.0,
        help="DDIM eta: 1 stochastic (official), 0 deterministic.",
        rich_help_panel=GENERATION,
    ),
]
FrameStrideOpt = Annotated[
    int,
    typer.Option(
        "--frame-stride", min=1, max=100,
        help="Motion condition (the model's fs): smaller means larger motion; 5-30 recommended.",
        rich_help_panel=GENERATION,
    ),
]  # fmt: skip
InbetweensOpt = Annotated[
    int | None,
    typer.Option(
        "--inbetweens", "-n", min=0, max=14,
        help="In-between frames per segment (the model makes 14; e.g. 7 for animation on twos). Default: all.",
        rich_help_panel=OUTPUT,
    ),
]  # fmt: skip
NumFramesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-frames", min=4, max=16,
        help="Frames each segment generates, both keys included (4-16; fewer is faster). Default: the model's 16.",
        rich_help_panel=GENERATION, show_default=False,
    ),
]  # fmt: skip
FpsOpt = Annotated[float, typer.Option("--fps", min=0.1, max=240.0, help="Output frame rate.", rich_help_panel=OUTPUT)]
SizeOpt = Annotated[
    str | None,
    typer.Option(
        "--size", metavar="HxW",
        help="Output size, multiples of 64 (native 320x512). Default: from the key frames' aspect.",
        rich_help_panel=OUTPUT,
    ),
]  # fmt: skip
FitOpt = Annotated[
    str,
    typer.Option(
        "--fit", help=f"Fitting key frames of another aspect: {', '.join(FIT_MODES)} (centre-crop, pad, squash).",
        rich_help_panel=OUTPUT,
    ),
]  # fmt: skip
LoopOpt = Annotated[
    bool,
    typer.Option("--loop", help="Add a segment from the last key frame back to the first.", rich_help_panel=OUTPUT),
]
ExactKeysOpt = Annotated[
    bool,
    typer.Option(
        "--exact-keys/--model-keys",
        help="Key frame positions show your (fitted) drawings exactly, or the model's decode of them.",
        rich_help_panel=OUTPUT,
    ),
]  # fmt: skip
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality", min=0, max=51, help="mp4/webm CRF (lower = better; default 17).", rich_help_panel=OUTPUT
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights", help="Checkpoint file or converted folder. Default: found in weights/.", rich_help_panel=MODEL
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Model config (official yaml or config.json).", rich_help_panel=MODEL)
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...", rich_help_panel=MODEL)]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype", rich_help_panel=MODEL,
        help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16, or autocast (fp32 weights under fp16 autocast: "
        "the official regime).",
    ),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout (no progress).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")]


def parse_output(text: str) -> Path:
    """``-o`` as typed (Typer's ``parser``): a trailing ``/`` means a folder of numbered PNGs; ``-`` and a new
    name without a suffix are usage errors (see ``toonctl.io.video.parse_output_path``)."""
    from toonctl.errors import OutputError
    from toonctl.io.video import parse_output_path

    try:
        return parse_output_path(text)
    except OutputError as exc:
        raise typer.BadParameter(f"{exc}; {exc.hint}" if exc.hint else str(exc)) from None


def settings_from_options(values: dict) -> InterpolateSettings:
    """Settings from a command's parameters (pass ``locals()``): the ``InterpolateSettings`` fields it has
    (``size`` as text), defaults for the others. A bad combination is a usage error (exit 2)."""
    from dataclasses import fields

    from toonctl.presets import parse_size

    known = {f.name for f in fields(InterpolateSettings)}
    given = {k: v for k, v in values.items() if k in known}
    try:
        if given.get("size"):
            given["size"] = parse_size(given["size"])
        return InterpolateSettings(**given)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def load_options(values: dict, **controls: Path | None) -> LoadOptions:
    """``LoadOptions`` from a command's parameters (pass ``locals()``): the model options it has (``compile_unet``
    is ``compile``), defaults for the others, plus the control stages to load (``sketch_encoder=PATH``)."""
    from dataclasses import fields

    given = {f.name: values[f.name] for f in fields(LoadOptions) if f.name in values}
    if "compile_unet" in values:
        given["compile"] = values["compile_unet"]
    if values.get("lora"):
        given["loras"] = tuple(parse_lora(text) for text in values["lora"])
    return LoadOptions(**given).with_controls(**controls)


def _check_decoder(value: str) -> str:
    """Refuse an unknown ``--decoder`` as a usage error (exit 2). Imports torch: only runs with the command."""
    from toonctl.pipelines.decoders import parse_decoder

    try:
        parse_decoder(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


DecoderOpt = Annotated[
    str,
    typer.Option(
        "--decoder", callback=_check_decoder, rich_help_panel=MODEL,
        help="VAE decoder: dualref (official), chunked or chunked:CHUNK[:OVERLAP] (less memory, approximate), "
        "dualref-nosplice, norefs, spatial, perframe. Compare them on your clips with `toonctl decode-bench`. "
        "When the free memory is short, dualref decodes its large layers in pieces (same frames up to float32 "
        "rounding; a 16 GB machine runs the default 320x512 job on the CPU).",
    ),
]  # fmt: skip


OffloadOpt = Annotated[
    str,
    typer.Option(
        "--offload", rich_help_panel=MODEL,
        help="none; model (each component on the GPU only while it runs); sequential (layer by layer: least "
        "memory, slowest).",
    ),
]  # fmt: skip
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map", metavar="COMPONENT=DEVICE,...", rich_help_panel=MODEL,
        help=f"Components on different GPUs, e.g. unet=cuda:1,vae=cuda:0 (components: {', '.join(COMPONENT_NAMES)}).",
    ),
]  # fmt: skip
AttentionOpt = Annotated[
    str, typer.Option("--attention", help="Attention backend: auto, sdpa, math, xformers.", rich_help_panel=MODEL)
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile", help="torch.compile the UNet (faster steps after a warm-up of a minute or more).",
        rich_help_panel=MODEL,
    ),
]  # fmt: skip


def check_loras(values: list[str] | None) -> list[str] | None:
    """Refuse a ``--lora`` value without a file or with a bad scale as a usage error (exit 2)."""
    for text in values or []:
        try:
            parse_lora(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return values


LoraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--lora", metavar="FILE[:SCALE]", callback=check_loras, rich_help_panel=MODEL, show_default=False,
        help="A LoRA adapter (from `toonctl train`) merged into the UNet at load, at SCALE (default 1; 0 = off). "
        "Repeat to merge several.",
    ),
]  # fmt: skip
