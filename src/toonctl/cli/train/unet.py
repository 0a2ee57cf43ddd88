"""``toonctl train unet``: toon rectification learning (the paper's fine-tuning), full fine-tuning or LoRA.

Parsing and printing only; the work is in ``toonctl.training`` (imported when the command runs).
"""

from __future__ import annotations

from typing import Annotated

import typer

from toonctl.cli.train._common import TrainRun, training_command

EXAMPLES = [
    ("Toon rectification on a folder of clips", "toonctl train unet clips/ -o runs/rectify --weights model.ckpt"),
    ("Continue it after a stop", "toonctl train unet clips/ -o runs/rectify --weights model.ckpt --resume"),
    ("A LoRA adapter, 24 GB card", "toonctl train unet clips/ -o runs/lora --lora-rank 16 --mixed-precision bf16 "
     "--gradient-checkpointing"),
    ("8 GPUs", "accelerate launch --num_processes 8 -m toonctl train unet clips/ -o runs/r --mixed-precision bf16"),
]  # fmt: skip


@training_command
def unet(
    run: TrainRun,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            rich_help_panel="What trains",
            help="rectify (Resampler + spatial layers, temporal frozen: the paper), full, projector, spatial.",
        ),
    ] = "rectify",
    trainable: Annotated[
        str | None,
        typer.Option(
            "--trainable",
            metavar="REGEX",
            rich_help_panel="What trains",
            show_default=False,
            help="Train the parameters whose official key matches REGEX (instead of --preset), e.g. "
            "'image_proj_model|fps_embedding'.",
        ),
    ] = None,
    lora_rank: Annotated[
        int,
        typer.Option(
            "--lora-rank",
            min=0,
            max=1024,
            rich_help_panel="What trains",
            help="Train LoRA adapters of this rank on the spatial attention instead (0: no LoRA).",
        ),
    ] = 0,
    lora_alpha: Annotated[
        float, typer.Option("--lora-alpha", min=0.0, rich_help_panel="What trains", help="LoRA alpha (scale).")
    ] = 16.0,
    lora_convs: Annotated[
        bool, typer.Option("--lora-convs", rich_help_panel="What trains", help="Adapt the ResBlock convs too.")
    ] = False,
    uncond_prob: Annotated[
        float,
        typer.Option(
            "--uncond-prob",
            min=0.0,
            max=0.33,
            rich_help_panel="What trains",
            help="Classifier-free-guidance dropout p (text dropped when r < 2p, image when p <= r < 3p).",
        ),
    ] = 0.05,
    validation_steps: Annotated[
        int, typer.Option("--validation-steps", min=1, max=1000, help="DDIM steps of the validation clips.")
    ] = 10,
) -> None:
    """Fine-tune the interpolation UNet on your clips.

    Presets name what trains; the default, rectify, is ToonCrafter's toon rectification learning. Runs
    survive: checkpoints every --checkpoint-every steps, --resume continues exactly, Ctrl-C saves first.
    Export the result with `toonctl train export RUN -o model.safetensors`.
    """
    from toonctl.pipelines.interpolate import latent_factor
    from toonctl.training.unet_objective import UNetSettings, load_objective
    from toonctl.training.validation import validation_items

    if preset not in ("rectify", "full", "projector", "spatial"):
        raise typer.BadParameter(f"--preset must be rectify, full, projector or spatial, got {preset!r}")
    weights, config = run.find_model()
    data = run.data_settings(latent_factor(config))
    settings = UNetSettings(
        weights=str(weights.resolve()), config=None if run.config is None else str(run.config.resolve()),
        trainable=trainable or preset, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_convs=lora_convs,
        uncond_prob=uncond_prob, validation_steps=validation_steps,
    )  # fmt: skip

    def make_objective():
        items = []
        if run.validation_every:
            from toonctl.io.clips import discover_clips

            items = validation_items(
                discover_clips(run.validation_clips or run.data),
                data,
                1 if not run.validation_clips else len(run.validation_clips),
            )
        return load_objective(settings, items)

    run.start("unet", make_objective, settings.to_dict(), data)
