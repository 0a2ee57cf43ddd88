"""``toonctl train export``: a run's trained weights as a checkpoint (or a LoRA adapter file).

Parsing and printing only; the work is in ``toonctl.training.objectives.export_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli._errors import handle_errors
from toonctl.cli._output import Output

EXAMPLES = [
    ("The latest checkpoint as a full model", "toonctl train export runs/rectify -o toon.safetensors"),
    ("A given step", "toonctl train export runs/rectify --step 2000 -o toon-2000.safetensors"),
    ("A LoRA run: the adapter file", "toonctl train export runs/lora -o style.safetensors"),
    ("A LoRA run as a full model", "toonctl train export runs/lora --merge -o toon-style.safetensors"),
]


@handle_errors
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="The run folder (--output-dir of the run).")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", show_default=False, help="Output: .safetensors (or .ckpt for a full checkpoint)."
        ),
    ],
    step: Annotated[
        int | None, typer.Option("--step", min=0, show_default=False, help="Checkpoint step (default: latest).")
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="LoRA run: a full checkpoint with the adapter merged in (scale 1).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")] = False,
) -> None:
    """Write a run's trained weights: a full checkpoint in the official key layout (loads with
    `toonctl interpolate --weights`), or for a LoRA run the adapter file (`--lora FILE[:SCALE]` at inference;
    with --merge: a full checkpoint with the adapter merged in)."""
    from toonctl.training.objectives import export_run

    out = Output(json_mode=json_out, quiet=quiet)
    out.info(f"exporting {run_dir} ...")
    written, exported_step = export_run(run_dir, output, step=step, merge=merge)
    out.result(f"wrote {written} (step {exported_step})", output=str(written), step=exported_step)
