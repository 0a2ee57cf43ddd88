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
ENCODER_FILES = ("sketch_encoder.ckpt", "sketch_encoder-fp16.safetensors")  # official, kijai's fp16 copy
EXTRACTOR_FILES = ("sketch_extractor.pth",)

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
    fps: opt.FpsOpt = opt.D.fps,
    size: opt.SizeOpt = None,
    fit: opt.FitOpt = opt.D.fit,
    loop: opt.LoopOpt = opt.D.loop,
    exact_keys: opt.ExactKeysOpt = opt.D.exact_keys,
    quality: opt.QualityOpt = opt.D.quality,
    skip_existing: SkipExistingOpt = False,
    weights: opt.WeightsOpt = None,
    sketch_encoder: SketchEncoderOpt = None,
    config: opt.ConfigOpt = None,
    device: opt.DeviceOpt = "auto",
    dtype: opt.DtypeOpt = "auto",
    decoder: opt.DecoderOpt = "dualref",
    offload: opt.OffloadOpt = "none",
    device_map: opt.DeviceMapOpt = None,
    attention: opt.AttentionOpt = "auto",
    compile_unet: opt.CompileOpt = False,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """In-betweens of a chain of key frames, steered by sketches of some of the frames.

    Sketch INDEX is the output frame it shapes, numbered as written (key 0 is frame 0; with -n the frames
    kept). Frames without a sketch follow the model, as in `interpolate`.
    """
    from toonctl.io.sketches import load_sketches
    from toonctl.io.video import output_complete
    from toonctl.pipelines.chain import ChainSettings
    from toonctl.pipelines.sketch import chain_frame_map, sketch_segment_kwargs
    from toonctl.render import prepare_shot, render_shot

    out = Output(json_mode=json_out, quiet=quiet)
    _check_choices(polarity, sketch_context)
    settings = opt.settings_from_options(locals())
    if skip_existing and output_complete(output):  # a file, or a folder holding frames
        out.result(f"skipped {output} (exists)", output=str(output), skipped=True)
        return
    paths = _sketch_paths(sketch, sketches)
    model = find_model(weights, config)
    encoder_path = _weights_file(sketch_encoder, ENCODER_FILES, "--sketch-encoder", weights)
    shot = prepare_shot(keyframes, output, settings, model[1])
    chain = ChainSettings(inbetweens=settings.inbetweens, loop=settings.loop, exact_keys=settings.exact_keys)
    num_generated = model[1].unet.temporal_length
    _check_indices(paths, len(chain_frame_map(len(shot.keyframes), num_generated, chain)))
    loaded = load_sketches(paths, shot.size, settings.fit, polarity)
    for note in shot.notes:
        out.warn(note)
    for note in loaded.notes:
        out.info(note)
    pipe = load_pipeline(
        out, model, device, dtype, decoder,
        offload=offload, device_map=device_map, attention=attention, compile_unet=compile_unet, frame_size=shot.size,
    )  # fmt: skip
    encoder = _load_encoder(out, encoder_path, model[1], pipe)
    segment_kwargs = sketch_segment_kwargs(
        encoder, loaded.hints, len(shot.keyframes), num_generated, chain, scale=control_scale, dense=dense,
        context=sketch_context, text_tokens=model[1].unet.text_context_len,
    )  # fmt: skip
    with render_progress(out, output.name, settings.steps) as hooks:
        result = render_shot(pipe, shot, settings, hooks, segment_kwargs=segment_kwargs)
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
    weights: opt.WeightsOpt = None,
    sketch_encoder: SketchEncoderOpt = None,
    config: opt.ConfigOpt = None,
    device: opt.DeviceOpt = "auto",
    dtype: opt.DtypeOpt = "auto",
    decoder: opt.DecoderOpt = "dualref",
    offload: opt.OffloadOpt = "none",
    device_map: opt.DeviceMapOpt = None,
    attention: opt.AttentionOpt = "auto",
    compile_unet: opt.CompileOpt = False,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Colour line art: one sketch per frame (named by index), coloured reference(s) -> coloured frames.

    R1 is frame 0 coloured; R2, if given, the last frame coloured. With one reference it serves as both key
    frames of the first run (the last frame is pulled toward its pose: give R2 when the last pose differs
    much). More frames than a window are coloured in windows sharing their boundary frames, which are
    coloured first from the references, so colours stay consistent.
    """
    import time

    import torch

    from toonctl.io.sketches import load_sketches
    from toonctl.io.video import output_complete, to_uint8, write_frames
    from toonctl.pipelines.sketch import colorize as colorize_frames
    from toonctl.pipelines.sketch import colorize_passes
    from toonctl.render import prepare_shot

    out = Output(json_mode=json_out, quiet=quiet)
    _check_choices(polarity, sketch_context)
    references = [*(refs or []), *(refs_args or [])]
    if not 1 <= len(references) <= 2:
        raise typer.BadParameter(f"give one or two coloured references, got {len(references)}", param_hint="--refs")
    settings = opt.settings_from_options(locals())
    if skip_existing and output_complete(output):  # a file, or a folder holding frames
        out.result(f"skipped {output} (exists)", output=str(output), skipped=True)
        return
    paths = _sketch_paths(sketch, sketches)
    num_frames = max(paths) + 1
    if num_frames < 2:
        raise typer.BadParameter("colorize needs sketches up to at least frame 1", param_hint="--sketches")
    model = find_model(weights, config)
    longest = model[1].unet.temporal_length
    if window is not None and window > longest:
        raise typer.BadParameter(f"at most the model's {longest} frames, got {window}", param_hint="--window")
    passes = colorize_passes(num_frames, window or longest)
    encoder_path = _weights_file(sketch_encoder, ENCODER_FILES, "--sketch-encoder", weights)
    shot = prepare_shot(references if len(references) == 2 else references * 2, output, settings, model[1])
    loaded = load_sketches(paths, shot.size, settings.fit, polarity)
    for note in shot.notes:
        out.warn(note)
    for note in loaded.notes:
        out.info(note)
    missing = [i for i in range(num_frames) if i not in paths]
    if missing:
        out.warn(f"no sketch for frames {_ranges(missing)}: they get no control")
    pipe = load_pipeline(
        out, model, device, dtype, decoder,
        offload=offload, device_map=device_map, attention=attention, compile_unet=compile_unet, frame_size=shot.size,
    )  # fmt: skip
    encoder = _load_encoder(out, encoder_path, model[1], pipe)
    started = time.monotonic()
    with render_progress(out, output.name, settings.steps) as hooks:
        step_cb = None if hooks.step is None else (lambda info: hooks.step(info["i"] + 1, settings.steps))
        frames = colorize_frames(
            pipe, encoder, shot.keyframes[: len(references)], loaded.hints, num_frames, settings.prompt,
            window=window, scale=control_scale, dense=dense, context=sketch_context,
            generator=torch.Generator().manual_seed(settings.seed), on_pass=hooks.segment, steps=settings.steps,
            guidance_scale=settings.guidance_scale, guidance_rescale=settings.guidance_rescale, eta=settings.eta,
            frame_stride=settings.frame_stride, callback=step_cb,
        )  # fmt: skip
        written = write_frames(to_uint8(frames), output, fps=settings.fps, quality=settings.quality)
    seconds = time.monotonic() - started
    h, w = shot.size
    out.result(
        f"wrote {written} ({num_frames} frames, {h}×{w}, {settings.fps:g} fps, {len(references)} reference"
        f"{'s' if len(references) == 2 else ''}, {seconds:.1f} s)",
        output=str(written), frames=num_frames, height=h, width=w, fps=settings.fps, references=len(references),
        passes=len(passes), seconds=round(seconds, 3), seed=settings.seed, skipped=False,
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
    import time

    import numpy as np
    import torch

    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.io.sketches import check_line_art_output, line_art_to_uint8, read_media, write_line_art
    from toonctl.models.sketch_extractor import load_sketch_extractor
    from toonctl.pipelines.sketch import extract_line_art

    out = Output(json_mode=json_out, quiet=quiet)
    try:
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    frames, source_fps, kind = read_media(source)
    check_line_art_output(output, frames.shape[0])
    path = _weights_file(extractor, EXTRACTOR_FILES, "--extractor", None)
    out.info(f"Loading {path} on {torch_device} ({str(torch_dtype).removeprefix('torch.')})")
    net = load_sketch_extractor(path, device=torch_device, dtype=torch_dtype)
    multiple = net.config.size_multiple
    if load_size % multiple:
        raise typer.BadParameter(f"must be a multiple of {multiple}, got {load_size}", param_hint="--load-size")
    started = time.monotonic()
    arts = []
    with out.progress() as progress:
        task = None if progress is None else progress.add_task(f"{output.name}: line art", total=frames.shape[0])
        for begin in range(0, frames.shape[0], 4):
            chunk = torch.from_numpy(np.array(frames[begin : begin + 4])).permute(0, 3, 1, 2)  # (N, 3, H, W)
            art = extract_line_art(net, chunk.float().div(127.5).sub(1), load_size=load_size)
            arts.append(line_art_to_uint8(art))
            if progress is not None:
                progress.update(task, completed=begin + chunk.shape[0])
    rate = fps or source_fps or 8.0
    written = write_line_art(np.concatenate(arts), output, fps=rate, quality=quality)
    seconds = time.monotonic() - started
    count, (h, w) = frames.shape[0], frames.shape[1:3]
    out.result(
        f"wrote {written} ({count} frame{'s' if count > 1 else ''} of line art, {h}×{w}, {seconds:.1f} s)",
        output=str(written), frames=count, height=h, width=w, input=kind, seconds=round(seconds, 3),
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


def _check_indices(paths: dict[int, Path], count: int) -> None:
    beyond = [i for i in paths if i >= count]
    if beyond:
        raise typer.BadParameter(
            f"sketches for frames {_ranges(beyond)}, but the output has {count} frames (0..{count - 1})",
            param_hint="--sketch/--sketches",
        )


def _ranges(indices: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts, run = [], [indices[0]]
    for i in indices[1:]:
        if i == run[-1] + 1:
            run.append(i)
        else:
            parts.append(run)
            run = [i]
    parts.append(run)
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)


def _weights_file(given: Path | None, names: tuple[str, ...], flag: str, model_weights: Path | None) -> Path:
    """``given``, else the first of ``names`` beside ``--weights`` or in the weights folder."""
    from toonctl.errors import WeightsNotFoundError
    from toonctl.weights import weights_dir

    if given is not None:
        if given.is_file():
            return given
        raise WeightsNotFoundError(f"{flag} {given} does not exist", hint="check the path")
    folders = [weights_dir()]
    if model_weights is not None:
        folders.insert(0, model_weights if model_weights.is_dir() else model_weights.parent)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(f / names[0]) for f in folders)
    raise WeightsNotFoundError(
        f"no {names[0]} found (looked for {looked})",
        hint=f"run `toonctl weights fetch --sketch`, or pass {flag} PATH",
    )


def _load_encoder(out: Output, path: Path, model_config, pipe):
    """The sketch encoder for ``pipe``'s UNet, on its device and in its dtype."""
    from toonctl.models.sketch_encoder import SketchEncoderConfig, load_sketch_encoder

    out.info(f"Loading {path}")
    config = SketchEncoderConfig.for_unet(model_config.unet)
    return load_sketch_encoder(path, config, device=pipe.device, dtype=next(pipe.unet.parameters()).dtype)


def shot_sketch_control(out: Output, sketch_dir: Path, shot, settings, model_config, pipe, encoder_cache: dict,
                        weights: Path | None):  # fmt: skip
    """The per-segment control of a ``batch`` shot whose folder has a ``sketches/`` subfolder (sparse,
    scale 0.6, polarity detected, the text context: the ``sketch-interp`` defaults)."""
    from toonctl.io.sketches import list_sketches, load_sketches
    from toonctl.pipelines.chain import ChainSettings
    from toonctl.pipelines.sketch import chain_frame_map, sketch_segment_kwargs

    paths = list_sketches(sketch_dir)
    chain = ChainSettings(inbetweens=settings.inbetweens, loop=settings.loop, exact_keys=settings.exact_keys)
    num_generated = model_config.unet.temporal_length
    count = len(chain_frame_map(len(shot.keyframes), num_generated, chain))
    beyond = [i for i in paths if i >= count]
    if beyond:
        raise ValueError(f"sketches for frames {_ranges(beyond)}, but the output has {count} frames (0..{count - 1})")
    if "encoder" not in encoder_cache:
        path = _weights_file(None, ENCODER_FILES, "--sketch-encoder", weights)
        encoder_cache["encoder"] = _load_encoder(out, path, model_config, pipe)
    loaded = load_sketches(paths, shot.size, settings.fit, "auto")
    return sketch_segment_kwargs(
        encoder_cache["encoder"], loaded.hints, len(shot.keyframes), num_generated, chain,
        text_tokens=model_config.unet.text_context_len,
    )  # fmt: skip
