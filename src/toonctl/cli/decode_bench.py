"""``toonctl decode-bench INPUT... [-o REPORT]``: quality, speed and memory of each decoder variant on your clips.

The benchmark itself is ``toonctl.decode_bench``; this command parses, runs it with a progress bar, and prints
or writes the report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import handle_errors
from toonctl.cli._model import find_model
from toonctl.cli._output import Output

EXAMPLES = [
    ("Every decoder variant on a shot, at the native size", "toonctl decode-bench shot.mp4"),
    (
        "Full vs chunked decoding, bf16 and fp16, a CSV report",
        "toonctl decode-bench shot.mp4 frames/ --decoders dualref,chunked:8:4 --dtype bf16,fp16 -o bench.csv",
    ),
    ("Numbers for a script", "toonctl decode-bench frames/ --max-clips 2 --json"),
]


@handle_errors
def decode_bench(
    inputs: Annotated[
        list[Path], typer.Argument(help="Video files or folders of frames.", show_default=False, metavar="INPUT...")
    ],
    report: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the report: .json, .csv, or anything else for the table."),
    ] = None,
    decoders: Annotated[
        str,
        typer.Option(
            "--decoders",
            help="Comma-separated variants: all, or dualref, dualref-nosplice, norefs, spatial, "
            "perframe, chunked, chunked:CHUNK[:OVERLAP].",
        ),
    ] = "all",
    dtype: Annotated[
        str, typer.Option("--dtype", help="Comma-separated decode precisions: auto, fp32, bf16, fp16.")
    ] = "auto",
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            metavar="HxW",
            rich_help_panel=opt.OUTPUT,
            help="Clip size, multiples of 64 (native 320x512). Default: from the first input's aspect.",
        ),
    ] = None,
    fit: Annotated[
        str,
        typer.Option("--fit", help="Fitting frames of another aspect: crop, pad, resize.", rich_help_panel=opt.OUTPUT),
    ] = opt.D.fit,
    num_frames: Annotated[
        int | None, typer.Option("--num-frames", min=2, help="Frames per clip. Default: the model's (16).")
    ] = None,
    max_clips: Annotated[
        int | None, typer.Option("--max-clips", min=1, help="At most this many clips per input.")
    ] = None,
    lpips_dir: Annotated[
        Path | None, typer.Option("--lpips-dir", help="Folder with the LPIPS weight files (or $TOONCTL_LPIPS_DIR).")
    ] = None,
    weights: opt.WeightsOpt = opt.L.weights,
    config: opt.ConfigOpt = opt.L.config,
    device: opt.DeviceOpt = opt.L.device,
    json_out: opt.JsonOpt = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print the per-clip results as CSV on stdout.")] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Measure the decoder variants on your own clips: PSNR/SSIM/LPIPS, speed, peak memory.

    Each clip is encoded once and decoded by every variant, then compared with the input and the full decode.
    """
    from toonctl.decode_bench import TABLE_WIDTH, parse_stages, read_clips, run_bench
    from toonctl.io.atomic import check_writable
    from toonctl.presets import FIT_MODES, LoadOptions

    if json_out and csv_out:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--csv")
    if fit not in FIT_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(FIT_MODES)}", param_hint="--fit")
    if report is not None:
        check_writable(report)  # before the (long) run: the folder exists and takes a new file
    stages = parse_stages(decoders)
    out = Output(quiet=quiet or json_out or csv_out)
    model = find_model(LoadOptions(weights=weights, config=config))
    clips, sources, frame_size = read_clips(inputs, model[1], num_frames, size, fit, max_clips)
    with out.progress() as progress:
        task = progress.add_task("encoding", total=None) if progress is not None else None

        def advance(done: int, total: int, label: str) -> None:
            if progress is not None:
                progress.update(task, completed=done, total=total, description=label)

        bench = run_bench(model, clips, stages, dtype, device, lpips_dir, log=out.info, progress=advance)
    bench.header["inputs"] = sources
    if json_out:
        print(bench.to_json(), flush=True)
    elif csv_out:
        print(bench.to_csv(), end="", flush=True)
    elif not quiet:
        from rich.console import Console

        # piped: wide enough for every column, rather than Rich's 80
        Console(highlight=False, width=None if sys.stdout.isatty() else TABLE_WIDTH).print(bench.table())
    if report is not None:
        bench.write(report)
        out.info(f"wrote {report}")
    h, w = frame_size
    if quiet and not (json_out or csv_out):
        out.result(f"decode-bench: {len(clips)} clips of {clips[0].frames.shape[0]} frames at {h}×{w}")
