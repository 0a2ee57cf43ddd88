"""``toonctl dataset``: build a training set from raw episodes, merge shards, inspect the result.

Parsing and printing only; the work is in ``toonctl.dataset`` (imported inside the commands, so
``toonctl --help`` never imports OpenCV).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import EXIT_PARTIAL, handle_errors
from toonctl.cli._help import Command, Group
from toonctl.cli._output import Output, examples_epilog
from toonctl.dataset.settings import CUT_THRESHOLD, HOLD_FRACTION, MAX_TEXT, MIN_FLOW, MIN_FRAMES

SHOTS, FILTERS, SCORES, OUTPUT, SCALE = "Shots", "Filters", "CLIP scores (optional)", "Output", "Scale"

dataset_app = typer.Typer(
    cls=Group,
    help="Turn raw cartoon episodes into a training set for `toonctl train`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BUILD_EXAMPLES = [
    ("Every video under episodes/ into clips/ + manifest.csv", "toonctl dataset build episodes/ -o data/"),
    ("Re-run after a crash: finished episodes are skipped", "toonctl dataset build episodes/ -o data/"),
    ("Four processes, captions from a CSV", "toonctl dataset build episodes/ -o data/ --workers 4 --captions c.csv"),
    ("Machine 2 of 8 (then `toonctl dataset merge`)", "toonctl dataset build episodes/ -o part2/ --shard 2/8"),
    ("No copies: the manifest points into the episodes", "toonctl dataset build ep01.mp4 -o data/ --reference"),
    (
        "CLIP caption alignment and an aesthetic head; drop the worst",
        "toonctl dataset build episodes/ -o data/ --weights weights/model.ckpt --aesthetic-head head.safetensors"
        " --min-alignment 0.2",
    ),
]
MERGE_EXAMPLES = [("Join eight shards", "toonctl dataset merge part0/ part1/ part2/ ... part7/ -o data/")]
INSPECT_EXAMPLES = [
    ("Counts, durations, distributions, undecodable clips", "toonctl dataset inspect data/"),
    ("Without decoding, as JSON", "toonctl dataset inspect data/ --no-decode --json"),
]


def _shard(value: str | None) -> tuple[int, int]:
    from toonctl.dataset.sources import parse_shard

    if value is None:
        return 0, 1
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None


@dataset_app.command(cls=Command, epilog=examples_epilog(BUILD_EXAMPLES))
@handle_errors
def build(
    episodes: Annotated[
        list[Path], typer.Argument(metavar="EPISODES", help="Video files, or folders searched for videos.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder (created; resumed if it exists).")],
    cut_threshold: Annotated[
        float,
        typer.Option(min=0.0, help="PySceneDetect content-detector threshold (0-255).", rich_help_panel=SHOTS),
    ] = CUT_THRESHOLD,
    min_shot: Annotated[
        float, typer.Option(min=0.01, help="Seconds; shorter shots are dropped.", rich_help_panel=SHOTS)
    ] = 1.0,
    min_frames: Annotated[
        int, typer.Option(min=1, help="Fewest frames of a clip (toonctl train needs 16).", rich_help_panel=SHOTS)
    ] = MIN_FRAMES,
    max_shot: Annotated[
        float, typer.Option(min=0.01, help="Seconds; longer shots are cut into clips.", rich_help_panel=SHOTS)
    ] = 10.0,
    clip_length: Annotated[
        float, typer.Option(min=0.01, help="Seconds per clip when a long shot is cut.", rich_help_panel=SHOTS)
    ] = 5.0,
    min_flow: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Static filter: drop clips whose mean optical flow (px/frame at 256 px width) is lower; 0: off.",
            rich_help_panel=FILTERS,
        ),
    ] = MIN_FLOW,
    hold_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Held drawings: two frames are one drawing when under this fraction of pixels changed.",
            rich_help_panel=FILTERS,
        ),
    ] = HOLD_FRACTION,
    text_detector: Annotated[
        str | None,
        typer.Option(
            help="Text filter: 'heuristic', or a command run as COMMAND IMAGE.png that prints the text fraction."
            " Default: off.",
            rich_help_panel=FILTERS,
        ),
    ] = None,
    max_text: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Text filter: drop clips with more text than this fraction.",
            rich_help_panel=FILTERS,
        ),
    ] = MAX_TEXT,
    score: Annotated[
        bool,
        typer.Option(
            "--score",
            help="Compute CLIP scores with the model from --weights (default: the weights folder).",
            rich_help_panel=SCORES,
        ),
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option(help="model.ckpt holding the CLIP towers (implies --score).", rich_help_panel=SCORES),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Model config of --weights.", rich_help_panel=SCORES)] = None,
    aesthetic_head: Annotated[
        Path | None,
        typer.Option(
            help="Linear aesthetic head (.safetensors: weight (D,), bias) over the image embedding.",
            rich_help_panel=SCORES,
        ),
    ] = None,
    min_alignment: Annotated[
        float | None, typer.Option(help="Drop clips whose caption-frame alignment is lower.", rich_help_panel=SCORES)
    ] = None,
    min_aesthetic: Annotated[
        float | None, typer.Option(help="Drop clips whose aesthetic score is lower.", rich_help_panel=SCORES)
    ] = None,
    device: Annotated[
        str, typer.Option(help="Device of the CLIP towers: auto, cpu, cuda.", rich_help_panel=SCORES)
    ] = "auto",
    captions: Annotated[
        Path | None,
        typer.Option(help="CSV of captions: episode, caption[, start, end frames].", rich_help_panel=OUTPUT),
    ] = None,
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt", "-p", help="Caption of clips without a CSV row or sidecar .txt.", rich_help_panel=OUTPUT
        ),
    ] = "",
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Write no clip files: the manifest points into the episodes (start/end frames).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="x264 quality of clip files.", rich_help_panel=OUTPUT)] = 17,
    workers: Annotated[int, typer.Option(min=1, help="Episodes processed in parallel.", rich_help_panel=SCALE)] = 1,
    shard: Annotated[
        str | None,
        typer.Option(metavar="I/N", help="Take the I-th of N disjoint parts (0-based).", rich_help_panel=SCALE),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo finished episodes.", rich_help_panel=SCALE)] = False,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Cut EPISODES into clips (shots, static and text filters, held drawings, captions) in the folder -o.

    Writes one mp4 per clip, manifest.csv (what `toonctl train` reads), scores.jsonl (every measure of
    every clip) and report/ (counts per filter, histograms, contact sheets). With --score or --weights,
    also CLIP caption-frame alignment (and --aesthetic-head scores) from the model's own CLIP towers;
    scores are recorded, and drop clips only under --min-alignment / --min-aesthetic. A re-run resumes;
    exit code 3 when an episode could not be used (it is skipped and listed).
    """
    from toonctl.dataset.build import build_dataset
    from toonctl.dataset.settings import BuildSettings
    from toonctl.errors import DataError

    shard_index, shard_count = _shard(shard)
    scoring = _scoring(score, weights, config, aesthetic_head, min_alignment, min_aesthetic, device)
    try:
        settings = BuildSettings(
            cut_threshold=cut_threshold,
            min_shot=min_shot,
            min_frames=min_frames,
            max_shot=max_shot,
            clip_length=clip_length,
            hold_fraction=hold_fraction,
            min_flow=min_flow,
            text_detector=text_detector,
            max_text=max_text,
            copy=not reference,
            crf=crf,
            prompt=prompt,
            captions_csv=None if captions is None else str(captions.resolve()),
        )
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = Output(json_mode=json_out, quiet=quiet)
    with _episode_progress(out) as on_progress:
        result = build_dataset(
            episodes,
            output,
            settings,
            workers=workers,
            shard_index=shard_index,
            shard_count=shard_count,
            force=force,
            scoring=scoring,
            on_progress=on_progress,
            on_failure=lambda name, why: out.warn(f"skipped {why}"),
        )
    summary = {**result.summary, "processed": result.processed, "resumed": result.resumed, "failed_now": result.failed}
    if json_out:
        print(json.dumps(summary, default=str), flush=True)
    else:
        _print_summary(summary, output, full=not quiet)
    if result.failed:
        raise typer.Exit(EXIT_PARTIAL)


def _scoring(score, weights, config, aesthetic_head, min_alignment, min_aesthetic, device):
    """The ``ScoreSettings`` of the options (None: no scores); a usage error for score options without scores."""
    from toonctl.dataset.scoring import ScoreSettings

    if not (score or weights):
        if aesthetic_head or min_alignment is not None or min_aesthetic is not None:
            raise typer.BadParameter("--aesthetic-head, --min-alignment and --min-aesthetic need --score or --weights")
        return None
    if min_aesthetic is not None and aesthetic_head is None:
        raise typer.BadParameter("--min-aesthetic needs --aesthetic-head", param_hint="--min-aesthetic")
    if weights is None:
        from toonctl.weights import resolve_weights

        weights, _ = resolve_weights(None, config)
    return ScoreSettings(
        weights=str(weights.resolve()),
        config=None if config is None else str(config.resolve()),
        aesthetic_head=None if aesthetic_head is None else str(aesthetic_head.resolve()),
        min_alignment=min_alignment,
        min_aesthetic=min_aesthetic,
        device=device,
    )


class _episode_progress:
    """A Rich bar with ETA over the episodes (then the episodes scored) on a terminal, else one stderr line each."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.bar = None

    def __enter__(self):
        if self.out.show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.out.err,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("episodes", total=None)
        return self.update

    def update(self, progress) -> None:
        label = progress.name if progress.stage == "episodes" else f"CLIP scores: {progress.name}"
        if self.bar is not None:
            self.bar.update(self.task, completed=progress.done, total=progress.total, description=label)
            return
        eta = "" if progress.eta_seconds is None else f", ETA {_duration(progress.eta_seconds)}"
        state = "done" if progress.ok else "skipped"
        self.out.info(f"[{progress.done}/{progress.total}] {label} {state}{eta}")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _print_summary(summary: dict, output: Path, *, full: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    if not full:
        print(f"✓ {summary['kept']} clips in {output / 'manifest.csv'}; report in {output / 'report'}/", flush=True)
        return
    table = Table(title=f"dataset {output}", show_header=True)
    table.add_column("step")
    table.add_column("setting")
    table.add_column("clips", justify="right")
    table.add_row(
        "episodes",
        f"{summary['processed']} done now, {summary['resumed']} resumed, {summary['failed_episodes']} failed",
        str(summary["episodes"]),
    )
    table.add_row("shots", summary["filters"]["shots"], str(summary["shots"]))
    table.add_row("clips", "", str(summary["clips"]))
    for name, count in summary["dropped"].items():
        table.add_row(f"- {name}", summary["filters"].get(name, ""), str(count))
    scores = summary["scores"].get("computed") or []
    table.add_row("scores", ", ".join(scores) if scores else "none computed (no --score)", "")
    table.add_row(
        "kept",
        f"{summary['kept_seconds']:.1f} s, drawing rates {summary['drawing_rates']}",
        str(summary["kept"]),
        style="bold",
    )
    Console(highlight=False).print(table)
    print(f"✓ {summary['kept']} clips in {output / 'manifest.csv'}; report in {output / 'report'}/", flush=True)


@dataset_app.command(cls=Command, epilog=examples_epilog(MERGE_EXAMPLES))
@handle_errors
def merge(
    parts: Annotated[list[Path], typer.Argument(metavar="DATASETS", help="Dataset folders to join.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged dataset folder.")],
    force: Annotated[bool, typer.Option("--force", help="Merge folders built with other settings.")] = False,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Join datasets built apart (e.g. `--shard I/N` on several machines) into one, as one build would."""
    from toonctl.dataset.merge import merge_datasets

    out = Output(json_mode=json_out, quiet=quiet)
    summary = merge_datasets(parts, output, on_warning=out.warn, force=force)
    out.result(
        f"{summary['kept']} clips of {summary['episodes']} episodes in {output / 'manifest.csv'}",
        **{k: summary[k] for k in ("episodes", "clips", "kept", "kept_seconds", "dropped", "failed_episodes")},
    )


@dataset_app.command(cls=Command, epilog=examples_epilog(INSPECT_EXAMPLES))
@handle_errors
def inspect(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", help="A dataset folder (or its manifest).")],
    decode: Annotated[
        bool, typer.Option("--decode/--no-decode", help="Decode each clip's first and last frame.")
    ] = True,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Counts, total duration and distributions of a dataset, and the clips that fail to decode (exit 3)."""
    from toonctl.dataset.inspection import inspect_dataset

    out = Output(json_mode=json_out, quiet=quiet)
    with out.progress() as bar:
        task = bar.add_task("decoding", total=None) if bar is not None else None
        on_clip = (lambda i, n: bar.update(task, completed=i, total=n)) if bar is not None else None
        summary = inspect_dataset(dataset, decode=decode, on_clip=on_clip)
    if json_out:
        print(json.dumps(summary), flush=True)
    else:
        _print_inspection(summary)
    if summary["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


def _print_inspection(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"{summary['clips']} clips of {summary['episodes']} episodes, {summary['frames']} frames,"
        f" {summary['seconds']:.1f} s; {summary['empty_captions']} without caption"
    )
    if summary["drawing_rates"]:
        console.print("drawing rates: " + ", ".join(f"{k}: {v}" for k, v in summary["drawing_rates"].items()))
    if summary["columns"]:
        table = Table("column", "min", "median", "mean", "max")
        for name, d in summary["columns"].items():
            table.add_row(name, *(f"{d[k]:g}" for k in ("min", "median", "mean", "max")))
        console.print(table)
    if not summary["decoded"]:
        print("✓ not decoded (--no-decode)")
    elif summary["failed"]:
        for failure in summary["failed"]:
            console.print(f"[red]✗[/] {failure['path']} [{failure['start']}, {failure['end']}): {failure['error']}")
        print(f"✗ {len(summary['failed'])} of {summary['clips']} clips fail to decode", flush=True)
    else:
        print(f"✓ all {summary['clips']} clips decode", flush=True)
