"""Sketch control commands: ``sketch-interp`` (in-betweens steered by sketches), ``colorize`` (line art +
coloured references -> coloured frames) and ``sketch`` (line art from pictures, for guidance)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import handle_errors
from toonctl.cli._model import find_model, load_pipeline, render_progress
from toonctl.cli._output import Output

SKETCH = "Sketch control"

SketchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sketch", metavar="INDEX=PATH",
        help="A sketch for output frame INDEX (repeatable; replaces that frame's file from --sketches).",
        rich_help_panel=SKETCH, show_default=False,
    ),
]  # fmt: skip
SketchesOpt = Annotated[
    Path | None,
    typer.Option(
        "--sketches", metavar="DIR", help="A folder of sketches named by frame index (0007.png, frame_12.png).",
        rich_help_panel=SKETCH, show_default=False,
    ),
]  # fmt: skip
ControlScaleOpt = Annotated[
    float,
    typer.Option(
        "--control-scale", min=0.0, max=2.0, help="How strongly the sketches steer (0 = not at all).",
        rich_help_panel=SKETCH,
    ),
]  # fmt: skip
DenseOpt = Annotated[
    bool,
    typer.Option(
        "--dense/--sparse",
        help="Frames without a sketch get a blank sketch, as the community ports do (dense), or no control (sparse).",
        rich_help_panel=SKETCH,
    ),
]  # fmt: skip
PolarityOpt = Annotated[
    str,
    typer.Option(
        "--polarity", help="Sketch lines: auto (detect), black-on-white (drawings), white-on-black.",
        rich_help_panel=SKETCH,
    ),
]  # fmt: skip
SketchContextOpt = Annotated[
    str,
    typer.Option(
        "--sketch-context", help="What the sketch encoder attends to: text (the prompt tokens) or all tokens.",
        rich_help_panel=SKETCH,
    ),
]  # fmt: skip
SketchEncoderOpt = Annotated[
    Path | None,
    typer.Option(
        "--sketch-encoder", help="Sketch encoder weights. Default: sketch_encoder.ckpt in weights/.",
        rich_help_panel=opt.MODEL, show_default=False,
    ),
]  # fmt: skip
OutputOpt = Annotated[
    Path,
    typer.Option(
        "--output", "-o", parser=opt.parse_output,
        help="Output: .mp4 .webm .gif .webp .apng, or a folder ending in / for numbered PNGs.",
        show_default=False,
    ),
]  # fmt: skip
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing", help="Do nothing if OUTPUT already exists.")]

SKETCH_INTERP_EXAMPLES = [
    ("Two keys, one rough drawing for frame 8", "toonctl sketch-interp a.png b.png --sketch 8=rough8.png -o out.mp4"),
    ("A folder of sketches named by frame index", "toonctl sketch-interp a.png b.png --sketches sk/ -o out.mp4"),
    (
        "Stronger control, blank sketches for the other frames (community behaviour)",
        "toonctl sketch-interp a.png b.png --sketches sk/ --control-scale 0.9 --dense -o out.mp4",
    ),
]
COLORIZE_EXAMPLES = [
    ("One coloured reference, line art for every frame", "toonctl colorize --refs ref.png --sketches lines/ -o c.mp4"),
    ("First and last frame coloured", "toonctl colorize --refs first.png last.png --sketches lines/ -o frames/"),
]
SKETCH_EXAMPLES = [
    ("Line art of a picture", "toonctl sketch frame.png -o lines.png"),
    ("Line art of every frame of a clip, ready for --sketches", "toonctl sketch clip.mp4 -o lines/"),
]


@handle_errors
def sketch_interp(
    keyframes: opt.KeyframesArg,
    output: OutputOpt,
    sketch: SketchOpt = None,
    sketches: SketchesOpt = None,
    control_scale: ControlScaleOpt = 0.6,
    dense: DenseOpt = False,
    polarity: PolarityOpt = "auto",
    sketch_context: SketchContextOpt = "text",
    prompt: opt.PromptOpt = opt.D.prompt,
    seed: opt.SeedOpt = opt.D.seed,
    steps: opt.StepsOpt = opt.D.steps,
    guidance_scale: opt.GuidanceScaleOpt = opt.D.guidance_scale,
    guidance_rescale: opt.GuidanceRescaleOpt = opt.D.guidance_rescale,
    eta: opt.EtaOpt = opt.D.eta,
    frame_stride: opt.FrameStrideOpt = opt.D.frame_stride,
    inbetweens: opt.InbetweensOpt = opt.D.inbetweens,
    num_frames: opt.NumFramesOpt = opt.D.num_frames,
    fps: opt.FpsOpt = opt.D.fps,
    size: opt.SizeOpt = None,
    fit: opt.FitOpt = opt.D.fit,
    loop: opt.LoopOpt = opt.D.loop,
    exact_keys: opt.ExactKeysOpt = opt.D.exact_keys,
    quality: opt.QualityOpt = opt.D.quality,
    skip_existing: SkipExistingOpt = False,
    weights: opt.WeightsOpt = opt.L.weights,
    sketch_encoder: SketchEncoderOpt = None,
    config: opt.ConfigOpt = opt.L.config,
    device: opt.DeviceOpt = opt.L.device,
    dtype: opt.DtypeOpt = opt.L.dtype,
    decoder: opt.DecoderOpt = opt.L.decoder,
    offload: opt.OffloadOpt = opt.L.offload,
    device_map: opt.DeviceMapOpt = opt.L.device_map,
    attention: opt.AttentionOpt = opt.L.attention,
    compile_unet: opt.CompileOpt = opt.L.compile,
    lora: opt.LoraOpt = None,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """In-betweens of a chain of key frames, steered by sketches of some of the frames.

    Sketch INDEX is the output frame it shapes, numbered as written (key 0 is frame 0; with -n the frames
    kept). Frames without a sketch follow the model, as in `interpolate`.
    """
    from toonctl.errors import OptionError
    from toonctl.io.sketches import load_sketches
    from toonctl.io.video import output_complete
    from toonctl.pipelines.loading import plan_load
    from toonctl.pipelines.sketch import SketchGuidance
    from toonctl.render import ChainFrames, chain_output_frames, check_sketch_indices, prepare_shot, render_shot

    out = Output(json_mode=json_out, quiet=quiet)
    _check_choices(polarity, sketch_context)
    settings = opt.settings_from_options(locals())
    options = opt.load_options(locals(), sketch_encoder=sketch_encoder)
    if skip_existing and output_complete(output):  # a file, or a folder holding frames
        out.result(f"skipped {output} (exists)", output=str(output), skipped=True)
        return
    paths = _sketch_paths(sketch, sketches)
    model = find_model(options)
    plan_load(options, *model)  # the sketch encoder's file is found before any image is read
    shot = prepare_shot(keyframes, output, settings, model[1])
    try:
        check_sketch_indices(paths, chain_output_frames(len(shot.keyframes), settings, model[1]))
    except OptionError as exc:  # the indices come from either flag
        raise typer.BadParameter(str(exc), param_hint="--sketch/--sketches") from None
    loaded = load_sketches(paths, shot.size, settings.fit, polarity)
    for note in shot.notes:
        out.warn(note)
    for note in loaded.notes:
        out.info(note)
    pipe = load_pipeline(out, options, model, frame_size=shot.size)
    guidance = SketchGuidance(loaded.hints, scale=control_scale, dense=dense, context=sketch_context)
    with render_progress(out, output.name, settings.steps) as hooks:
        result = render_shot(pipe, shot, settings, ChainFrames(sketches=guidance), hooks)
    h, w = result.size
    out.result(
        f"wrote {result.output} ({result.frames} frames, {h}×{w}, {result.fps:g} fps, {len(paths)} sketches, "
        f"{result.seconds:.1f} s)",
        output=str(result.output), frames=result.frames, height=h, width=w, fps=result.fps,
        segments=result.segments, sketches=sorted(paths), seconds=round(result.seconds, 3), seed=settings.seed,
        skipped=False,
    )  # fmt: skip


@handle_errors
def colorize(
    output: OutputOpt,
    refs_args: Annotated[
        list[Path] | None,
        typer.Argument(metavar="REFS", help="Coloured reference frame(s), same as --refs.", show_default=False),
    ] = None,
    refs: Annotated[
        list[Path] | None,
        typer.Option(
            "--refs",
            help="Coloured frame 0, and optionally the coloured last frame: --refs R1 [R2].",
            show_default=False,
        ),
    ] = None,
    sketch: SketchOpt = None,
    sketches: SketchesOpt = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window", min=4, help="Most frames per model run (default: the model's 16).", rich_help_panel=SKETCH
        ),
    ] = None,
    control_scale: ControlScaleOpt = 0.6,
    dense: DenseOpt = False,
    polarity: PolarityOpt = "auto",
    sketch_context: SketchContextOpt = "text",
    prompt: opt.PromptOpt = opt.D.prompt,
    seed: opt.SeedOpt = opt.D.seed,
    steps: opt.StepsOpt = opt.D.steps,
    guidance_scale: opt.GuidanceScaleOpt = opt.D.guidance_scale,
    guidance_rescale: opt.GuidanceRescaleOpt = opt.D.guidance_rescale,
    eta: opt.EtaOpt = opt.D.eta,
    frame_stride: opt.FrameStrideOpt = opt.D.frame_stride,
    fps: opt.FpsOpt = opt.D.fps,
    size: opt.SizeOpt = None,
    fit: opt.FitOpt = opt.D.fit,
    quality: opt.QualityOpt = opt.D.quality,
    skip_existing: SkipExistingOpt = False,
    weights: opt.WeightsOpt = opt.L.weights,
    sketch_encoder: SketchEncoderOpt = None,
    config: opt.ConfigOpt = opt.L.config,
    device: opt.DeviceOpt = opt.L.device,
    dtype: opt.DtypeOpt = opt.L.dtype,
    decoder: opt.DecoderOpt = opt.L.decoder,
    offload: opt.OffloadOpt = opt.L.offload,
    device_map: opt.DeviceMapOpt = opt.L.device_map,
    attention: opt.AttentionOpt = opt.L.attention,
    compile_unet: opt.CompileOpt = opt.L.compile,
    lora: opt.LoraOpt = None,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Colour line art: one sketch per frame (named by index), coloured reference(s) -> coloured frames.

    R1 is frame 0 coloured; R2, if given, the last frame coloured. With one reference it serves as both key
    frames of the first run (the last frame is pulled toward its pose: give R2 when the last pose differs
    much). More frames than a window are coloured in windows sharing their boundary frames, which are
    coloured first from the references, so colours stay consistent.
    """
    from toonctl.io.sketches import load_sketches
    from toonctl.io.video import output_complete
    from toonctl.pipelines.loading import plan_load
    from toonctl.pipelines.sketch import SketchGuidance, colorize_passes
    from toonctl.render import ColorizeFrames, frame_ranges, prepare_shot, render_shot

    out = Output(json_mode=json_out, quiet=quiet)
    _check_choices(polarity, sketch_context)
    references = [*(refs or []), *(refs_args or [])]
    if not 1 <= len(references) <= 2:
        raise typer.BadParameter(f"give one or two coloured references, got {len(references)}", param_hint="--refs")
    settings = opt.settings_from_options(locals())
    options = opt.load_options(locals(), sketch_encoder=sketch_encoder)
    if skip_existing and output_complete(output):  # a file, or a folder holding frames
        out.result(f"skipped {output} (exists)", output=str(output), skipped=True)
        return
    paths = _sketch_paths(sketch, sketches)
    num_frames = max(paths) + 1
    if num_frames < 2:
        raise typer.BadParameter("colorize needs sketches up to at least frame 1", param_hint="--sketches")
    model = find_model(options)
    longest = model[1].unet.temporal_length
    if window is not None and window > longest:
        raise typer.BadParameter(f"at most the model's {longest} frames, got {window}", param_hint="--window")
    colorize_passes(num_frames, window or longest)
    plan_load(options, *model)  # the sketch encoder's file is found before any image is read
    shot = prepare_shot(references if len(references) == 2 else references * 2, output, settings, model[1])
    loaded = load_sketches(paths, shot.size, settings.fit, polarity)
    for note in shot.notes:
        out.warn(note)
    for note in loaded.notes:
        out.info(note)
    missing = [i for i in range(num_frames) if i not in paths]
    if missing:
        out.warn(f"no sketch for frames {frame_ranges(missing)}: they get no control")
    pipe = load_pipeline(out, options, model, frame_size=shot.size)
    guidance = SketchGuidance(loaded.hints, scale=control_scale, dense=dense, context=sketch_context)
    producer = ColorizeFrames(num_frames, len(references), guidance, window=window)
    with render_progress(out, output.name, settings.steps) as hooks:
        result = render_shot(pipe, shot, settings, producer, hooks)
    h, w = result.size
    out.result(
        f"wrote {result.output} ({num_frames} frames, {h}×{w}, {settings.fps:g} fps, {len(references)} reference"
        f"{'s' if len(references) == 2 else ''}, {result.seconds:.1f} s)",
        output=str(result.output), frames=num_frames, height=h, width=w, fps=settings.fps,
        references=len(references), passes=result.segments, seconds=round(result.seconds, 3), seed=settings.seed,
        skipped=False,
    )  # fmt: skip


@handle_errors
def sketch(
    source: Annotated[
        Path, typer.Argument(metavar="IN", help="An image, a video or a folder of frames.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            parser=opt.parse_output,
            show_default=False,
            help="One picture (.png .jpg ...) for an image; a folder (numbered PNGs) or a video for several frames.",
        ),
    ],
    extractor: Annotated[
        Path | None,
        typer.Option(
            "--extractor",
            help="Sketch extractor weights. Default: sketch_extractor.pth in weights/.",
            rich_help_panel=opt.MODEL,
            show_default=False,
        ),
    ] = None,
    load_size: Annotated[
        int, typer.Option("--load-size", min=1, help="Square size the extractor works at (multiple of 256).")
    ] = 512,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps", min=0.1, max=240.0, help="Output frame rate (default: the input's, else 8).", show_default=False
        ),
    ] = None,
    quality: opt.QualityOpt = opt.D.quality,
    device: opt.DeviceOpt = "auto",
    dtype: opt.DtypeOpt = "auto",
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Extract line art (black lines on white) with the sketch extractor (Anime2Sketch).

    Frames come out numbered from 0 in the input's order, so an output folder works as --sketches DIR.
    """
    from toonctl.line_art import extract_line_art_files

    out = Output(json_mode=json_out, quiet=quiet)
    with out.progress() as progress:
        task = None if progress is None else progress.add_task(f"{output.name}: line art", total=None)

        def advance(done: int, total: int) -> None:
            if progress is not None:
                progress.update(task, completed=done, total=total)

        result = extract_line_art_files(
            source, output, extractor=extractor, device=device, dtype=dtype, load_size=load_size, fps=fps,
            quality=quality, log=out.info, progress=advance,
        )  # fmt: skip
    count, (h, w) = result.frames, result.size
    out.result(
        f"wrote {result.output} ({count} frame{'s' if count > 1 else ''} of line art, {h}×{w}, "
        f"{result.seconds:.1f} s)",
        output=str(result.output), frames=count, height=h, width=w, input=result.input_kind,
        seconds=round(result.seconds, 3),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- helpers


def _check_choices(polarity: str, context: str) -> None:
    from toonctl.io.sketches import POLARITIES
    from toonctl.pipelines.sketch import CONTEXT_CHOICES

    if polarity not in POLARITIES:
        raise typer.BadParameter(f"choose one of {', '.join(POLARITIES)}, got {polarity!r}", param_hint="--polarity")
    if context not in CONTEXT_CHOICES:
        raise typer.BadParameter(
            f"choose one of {', '.join(CONTEXT_CHOICES)}, got {context!r}", param_hint="--sketch-context"
        )


def _sketch_paths(args: list[str] | None, directory: Path | None) -> dict[int, Path]:
    from toonctl.io.sketches import gather_sketches

    try:
        paths = gather_sketches(args or [], directory)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sketch") from None
    if not paths:
        raise typer.BadParameter("give sketches with --sketch INDEX=PATH or --sketches DIR", param_hint="--sketch")
    return paths
