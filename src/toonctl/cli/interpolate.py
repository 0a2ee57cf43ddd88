"""``toonctl interpolate KEY1 KEY2 [KEY3 ...] -o OUT``: in-betweens for a chain of key frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import handle_errors
from toonctl.cli._model import find_model, load_pipeline, render_progress
from toonctl.cli._output import Output

EXAMPLES = [
    ("Two key frames to an mp4", "toonctl interpolate a.png b.png -o out.mp4"),
    (
        "A chain of keys, 7 in-betweens each (on twos), 12 fps GIF",
        "toonctl interpolate k1.png k2.png k3.png -n 7 --fps 12 -o walk.gif",
    ),
    ("A looping cycle as numbered PNGs", "toonctl interpolate a.png b.png --loop -o frames/"),
    (
        "In a shell loop",
        'for d in shots/*/; do toonctl interpolate "$d"*.png -o "out/$(basename "$d").mp4" --skip-existing -q; done',
    ),
]


@handle_errors
def interpolate(
    keyframes: opt.KeyframesArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            parser=opt.parse_output,
            help="Output: .mp4 .webm .gif .webp .apng, or a folder ending in / for numbered PNGs.",
            show_default=False,
        ),
    ],
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
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Do nothing if OUTPUT already exists.")
    ] = False,
    weights: opt.WeightsOpt = opt.L.weights,
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
    """Generate the in-between frames of a chain of key frames.

    N key frames give N-1 segments of 16 model frames each (--num-frames), joined without repeating the shared
    keys.
    """
    from toonctl.io.video import output_complete
    from toonctl.render import ChainFrames, prepare_shot, render_shot

    out = Output(json_mode=json_out, quiet=quiet)
    settings = opt.settings_from_options(locals())
    options = opt.load_options(locals())
    if skip_existing and output_complete(output):  # a file, or a folder holding frames
        out.result(f"skipped {output} (exists)", output=str(output), skipped=True)
        return
    model = find_model(options)
    shot = prepare_shot(keyframes, output, settings, model[1])
    for note in shot.notes:
        out.warn(note)
    pipe = load_pipeline(out, options, model, frame_size=shot.size)
    with render_progress(out, output.name, settings.steps) as hooks:
        result = render_shot(pipe, shot, settings, ChainFrames(release_encoders=True), hooks)
    h, w = result.size
    out.result(
        f"wrote {result.output} ({result.frames} frames, {h}×{w}, {result.fps:g} fps, {result.seconds:.1f} s)",
        output=str(result.output), frames=result.frames, height=h, width=w, fps=result.fps,
        segments=result.segments, seconds=round(result.seconds, 3), seed=settings.seed, skipped=False,
    )  # fmt: skip
