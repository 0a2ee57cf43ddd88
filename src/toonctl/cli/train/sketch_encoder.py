"""``toonctl train sketch-encoder``: train the sketch encoder (a ControlNet) on the frozen interpolation model.

Parsing and printing only; the work is in ``toonctl.training.sketch_objective`` (imported when the command runs).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli.train._common import TrainRun, training_command

WHAT = "What trains"
SKETCHES = "Sketches"
EXAMPLES = [
    ("From the UNet (ControlNet-style), sketches made from the clips",
     "toonctl train sketch-encoder clips/ -o runs/sketch --weights model.ckpt --sketch-cache cache/sketches"),
    ("Continue the released encoder on your line style",
     "toonctl train sketch-encoder clips/ -o runs/sketch --weights model.ckpt --encoder sketch_encoder.ckpt"),
    ("Export it for sketch-interp / colorize", "toonctl train export runs/sketch -o sketch_encoder.ckpt"),
]  # fmt: skip


@training_command
def sketch_encoder(
    run: TrainRun,
    encoder: Annotated[
        Path | None,
        typer.Option(
            "--encoder",
            rich_help_panel=WHAT,
            show_default=False,
            help="Continue from this sketch_encoder.ckpt. Default: a fresh ControlNet copy of the UNet's encoder "
            "half (zero convolutions at zero: training starts from 'no control').",
        ),
    ] = None,
    sketches: Annotated[
        str,
        typer.Option(
            "--sketches",
            rich_help_panel=SKETCHES,
            help="extract: the sketch extractor draws them from each clip's frames; folder: read them from a "
            "sketches/NAME/ folder beside each clip (files named by frame index, as --sketches of sketch-interp).",
        ),
    ] = "extract",
    extractor: Annotated[
        Path | None,
        typer.Option(
            "--sketch-extractor",
            rich_help_panel=SKETCHES,
            show_default=False,
            help="sketch_extractor.pth (Anime2Sketch) that draws the sketches from the clips. Default: found "
            "beside --weights or in the weights folder.",
        ),
    ] = None,
    sketch_size: Annotated[
        int,
        typer.Option(
            "--sketch-size",
            min=64,
            max=2048,
            rich_help_panel=SKETCHES,
            help="The extractor's square processing size (Anime2Sketch: 512; smaller is faster).",
        ),
    ] = 512,
    sketch_cache: Annotated[
        Path | None,
        typer.Option(
            "--sketch-cache",
            rich_help_panel=SKETCHES,
            show_default=False,
            help="Cache each clip's sketches in this folder (later epochs skip the extractor).",
        ),
    ] = None,
    bisection_prob: Annotated[
        float,
        typer.Option(
            "--bisection-prob",
            min=0.0,
            max=1.0,
            rich_help_panel=SKETCHES,
            help="Share of steps with the bisection pattern; the rest sketch a random subset.",
        ),
    ] = 0.8,
    max_depth: Annotated[
        int,
        typer.Option(
            "--max-depth",
            min=1,
            max=8,
            rich_help_panel=SKETCHES,
            help="Bisection depth drawn from 1..N (4: from the middle frame to every frame).",
        ),
    ] = 4,
    include_keyframes: Annotated[
        bool,
        typer.Option(
            "--include-keyframes",
            rich_help_panel=SKETCHES,
            help="Let random subsets sketch the first and last (key) frames too.",
        ),
    ] = False,
    context: Annotated[
        str,
        typer.Option(
            "--context",
            rich_help_panel=WHAT,
            help="What the encoder attends to: text (the 77 prompt tokens) or all (text + image).",
        ),
    ] = "text",
    validation_steps: Annotated[
        int, typer.Option("--validation-steps", min=1, max=1000, help="DDIM steps of the validation clips.")
    ] = 10,
    uncond_prob: Annotated[
        float,
        typer.Option(
            "--uncond-prob",
            min=0.0,
            max=0.33,
            rich_help_panel=WHAT,
            help="Classifier-free-guidance dropout p of the prompt and image conditions.",
        ),
    ] = 0.05,
) -> None:
    """Train the sketch encoder: UNet, VAE and CLIP frozen, sparse per-frame sketches, the diffusion loss.

    Defaults follow the paper: lr 5e-5, effective batch 32, sketches on a bisection pattern of the 16
    frames (80%) or a random subset (20%); the other frames get no control. Export the encoder with
    `toonctl train export RUN -o sketch_encoder.ckpt` and use it with `toonctl sketch-interp --sketch-encoder`.
    """
    from toonctl.pipelines.interpolate import latent_factor
    from toonctl.training.sketch_objective import SKETCH_SOURCES, SketchSettings, load_objective
    from toonctl.weights import EXTRACTOR_FILES, find_weights_file

    if sketches not in SKETCH_SOURCES:
        raise typer.BadParameter(f"--sketches must be extract or folder, got {sketches!r}", param_hint="--sketches")
    if context not in ("text", "all"):
        raise typer.BadParameter(f"--context must be text or all, got {context!r}", param_hint="--context")
    if encoder is not None and not encoder.is_file():
        raise typer.BadParameter(f"{encoder} does not exist", param_hint="--encoder")
    weights, config = run.find_model()
    data = replace(run.data_settings(latent_factor(config)), sketch_folders=sketches == "folder")
    extractor_path = None
    if sketches == "extract":
        extractor_path = find_weights_file(extractor, EXTRACTOR_FILES, beside=weights, option="--sketch-extractor")
    settings = SketchSettings(
        weights=str(weights), config=None if run.config is None else str(run.config),
        encoder=None if encoder is None else str(encoder), sketch_source=sketches,
        extractor=None if extractor_path is None else str(extractor_path), sketch_size=sketch_size,
        sketch_cache=None if sketch_cache is None else str(sketch_cache), bisection_prob=bisection_prob,
        max_depth=max_depth, include_keyframes=include_keyframes, uncond_prob=uncond_prob, context=context,
    )  # fmt: skip

    def make_objective():
        items = []
        if run.validation_every and sketches == "extract":
            from toonctl.io.clips import discover_clips
            from toonctl.training.validation import validation_items

            count = len(run.validation_clips) if run.validation_clips else 1
            items = validation_items(discover_clips(run.validation_clips or run.data), data, count)
        return load_objective(settings, validation_items=items, validation_steps=validation_steps)

    if run.validation_every and sketches == "folder":
        run.out.warn("no validation with --sketches folder (it draws the validation sketches with the extractor)")
    run.start("sketch-encoder", make_objective, settings.to_dict(), data)
