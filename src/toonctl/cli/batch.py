"""``toonctl batch SHOTS -o OUT``: render every shot folder, resumably; a failing shot does not stop the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import EXIT_INTERRUPTED, EXIT_PARTIAL, describe, handle_errors
from toonctl.cli._model import find_model, load_pipeline, render_progress
from toonctl.cli._output import Output

EXAMPLES = [
    ("Render every shot folder of shots/ to out/<shot>.mp4", "toonctl batch shots/ -o out/"),
    ("Re-run after a crash: finished shots are skipped", "toonctl batch shots/ -o out/"),
    ("GIFs, on twos, JSON lines for a pipeline", "toonctl batch shots/ -o out/ --format gif -n 7 --json"),
    ("Four GPUs share the shots", "accelerate launch --num_processes 4 -m toonctl batch shots/ -o out/"),
]
FORMATS = ("mp4", "webm", "gif", "webp", "apng", "png")


@handle_errors
def batch(
    shots_dir: Annotated[
        Path, typer.Argument(metavar="SHOTS", help="Folder of shot folders (key frames, prompt.txt, shot.yaml).")
    ],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Output folder (created if missing).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"Output format: {', '.join(FORMATS)} (png: a folder of frames).")
    ] = "mp4",
    force: Annotated[bool, typer.Option("--force", help="Redo shots whose output already exists.")] = False,
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
    """Render every shot folder of SHOTS into OUT, skipping shots already finished.

    Options give the defaults; a shot's prompt.txt and shot.yaml override them. Exit code 3 when any
    shot failed (the others are still rendered). Under `accelerate launch` (or torchrun) the processes
    share the shots, one GPU each, and the main process prints the merged summary.
    """
    from dataclasses import replace

    from toonctl.batch import discover_shots, prepare_batch_shot, remove_stale_partials, with_sketch_encoder
    from toonctl.distributed import ProcessGroup, process_info
    from toonctl.errors import OutputError
    from toonctl.io.atomic import check_writable
    from toonctl.pipelines.loading import plan_load
    from toonctl.render import render_shot

    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
    info = process_info()  # several processes under `accelerate launch` / torchrun share the shots
    out = Output(json_mode=json_out, quiet=quiet or not info.is_main)
    base = opt.settings_from_options(locals())
    options = opt.load_options(locals())
    shots = discover_shots(shots_dir, out_dir, base, "/" if fmt == "png" else f".{fmt}")
    if not shots:
        raise OutputError(f"no shot folders in {shots_dir}", hint="each subfolder of SHOTS is one shot")
    try:  # only once SHOTS is known to hold shots
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    check_writable(out_dir / "shot", folder=out_dir)
    group = ProcessGroup(info)
    if info.is_main:
        for stale in remove_stale_partials(out_dir):
            out.info(f"removed unfinished output {stale.name} from an earlier run")
    group.barrier()  # no process starts writing before the stale temporaries are gone
    options = replace(options, device=info.device(options.device))

    model = find_model(options)
    mine = group.split(shots)
    to_render = [s for s in mine if not s.error and (force or not s.done)]
    options, sketch_error = with_sketch_encoder(options, to_render, model[0])
    plan_load(options, *model)  # bad model options are usage errors, not a failure of every shot
    rows: list[dict] = []
    pipe = None
    for shot in mine:
        row = {"shot": shot.name, "output": str(shot.output), "process": info.rank}
        if shot.error:
            rows.append({**row, "status": "failed", "error": shot.error})
        elif shot.done and not force:
            rows.append({**row, "status": "skipped"})
        else:
            try:
                prepared, producer = prepare_batch_shot(shot, model[1], sketch_error)
                if pipe is None:
                    pipe = load_pipeline(out, options, model, frame_size=prepared.size)
                with render_progress(out, shot.name, shot.settings.steps) as hooks:
                    result = render_shot(pipe, prepared, shot.settings, producer, hooks)
                rows.append({**row, "status": "done", "frames": result.frames, "seconds": round(result.seconds, 3)})
            except KeyboardInterrupt:
                rows.append({**row, "status": "interrupted"})
                _summary(out, rows)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except Exception as exc:  # one shot's failure is reported; the batch goes on
                rows.append({**row, "status": "failed", "error": describe(exc)[0]})
        out.record(**rows[-1])
        if rows[-1]["status"] == "failed":
            out.warn(f"shot {shot.name} failed: {rows[-1]['error']}")
    rows = group.gather(rows)  # every process's rows, for one merged summary
    group.close()
    if info.is_main:
        order = {shot.name: index for index, shot in enumerate(shots)}
        _summary(out, sorted(rows, key=lambda r: order[r["shot"]]))
    if any(r["status"] == "failed" for r in rows):
        raise typer.Exit(EXIT_PARTIAL)


def _summary(out: Output, rows: list[dict]) -> None:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed", "interrupted")}
    if not out.quiet:
        from rich.table import Table

        table = Table(title="toonctl batch")
        for column in ("shot", "status", "frames", "seconds", "output / error"):
            table.add_column(column)
        style = {"done": "green", "skipped": "dim", "failed": "red", "interrupted": "yellow"}
        for r in rows:
            detail = r.get("error") or r["output"]
            table.add_row(
                r["shot"], f"[{style[r['status']]}]{r['status']}[/]", str(r.get("frames", "")),
                str(r.get("seconds", "")), detail,
            )  # fmt: skip
        out.err.print(table)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    mark = "✗" if counts["failed"] or counts["interrupted"] else "✓"
    out.result(f"batch: {summary}", mark=mark, summary=True, **counts)
