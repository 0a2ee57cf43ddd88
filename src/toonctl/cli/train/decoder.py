"""``toonctl train decoder``: train the dual-reference video decoder of the VAE (encoder frozen).

Parsing and printing only; the work is in ``toonctl.training.decoder_objective`` (imported when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli.train._common import TrainRun, training_command

WHAT = "What trains"
LOSS = "Loss"
EXAMPLES = [
    ("Fine-tune the released decoder on your clips",
     "toonctl train decoder clips/ -o runs/decoder --weights model.ckpt --size 256x256 --lpips-dir lpips/"),
    ("From the plain image decoder, as the paper",
     "toonctl train decoder clips/ -o runs/dec --weights model.ckpt --init image-decoder --image-decoder sd-vae.ckpt"),
    ("Export into a full checkpoint", "toonctl train export runs/decoder -o model-newdecoder.safetensors"),
]  # fmt: skip


@training_command
def decoder(
    run: TrainRun,
    ctx: typer.Context,
    init: Annotated[
        str,
        typer.Option(
            "--init",
            rich_help_panel=WHAT,
            help="continue (the checkpoint's decoder) or image-decoder (a plain 2-D decoder, the "
            "dual-reference parts reset so it starts as exactly that decoder).",
        ),
    ] = "continue",
    image_decoder: Annotated[
        Path | None,
        typer.Option(
            "--image-decoder",
            rich_help_panel=WHAT,
            show_default=False,
            help="With --init image-decoder: a checkpoint holding a plain KL-f8 decoder (SD VAE). "
            "Default: the 2-D part of the checkpoint's own decoder.",
        ),
    ] = None,
    lpips_dir: Annotated[
        Path | None,
        typer.Option(
            "--lpips-dir",
            rich_help_panel=LOSS,
            show_default=False,
            help="Folder with the LPIPS weight files (or $TOONCTL_LPIPS_DIR).",
        ),
    ] = None,
    no_lpips: Annotated[
        bool, typer.Option("--no-lpips", rich_help_panel=LOSS, help="Use L1 + (1 - SSIM) even if LPIPS is found.")
    ] = False,
    adversarial: Annotated[
        bool,
        typer.Option(
            "--adversarial/--no-adversarial",
            rich_help_panel=LOSS,
            help="Add the PatchGAN term with the adaptive weight.",
        ),
    ] = True,
    disc_start: Annotated[
        int, typer.Option("--disc-start", min=0, rich_help_panel=LOSS, help="First step of the adversarial term.")
    ] = 10_000,
    disc_weight: Annotated[
        float, typer.Option("--disc-weight", min=0.0, rich_help_panel=LOSS, help="Factor on the adaptive weight.")
    ] = 0.5,
) -> None:
    """Train the dual-reference decoder: L1 + 0.1 LPIPS (+ adversarial), the VAE encoder frozen.

    Defaults follow the paper: lr 4.5e-6, effective batch 16, 60000 steps. Without LPIPS weights on disk the loss is
    L1 + (1 - SSIM). Validation (--validation-every) writes decode-bench's PSNR/SSIM/LPIPS of the validation
    clips to RUN/validation/. Export with `toonctl train export RUN -o model.safetensors`.
    """
    from toonctl.training.decoder_objective import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_STEPS,
        INIT_CHOICES,
        DecoderSettings,
        load_objective,
        perceptual_kind,
    )
    from toonctl.training.unet_objective import vae_factor

    if init not in INIT_CHOICES:
        raise typer.BadParameter(f"--init must be one of {', '.join(INIT_CHOICES)}, got {init!r}", param_hint="--init")
    if image_decoder is not None and init != "image-decoder":
        raise typer.BadParameter("--image-decoder needs --init image-decoder", param_hint="--image-decoder")
    if image_decoder is not None and not image_decoder.is_file():
        raise typer.BadParameter(f"{image_decoder} does not exist", param_hint="--image-decoder")
    # Not given: the paper's batch and length for the decoder rather than the shared defaults (32, 50000).
    if _is_default(ctx, "effective_batch"):
        run.effective_batch = DEFAULT_BATCH_SIZE
    if _is_default(ctx, "max_steps"):
        run.max_steps = DEFAULT_STEPS
    weights, config = run.find_model()
    data = run.data_settings(vae_factor(config))
    kind, reason = ("ssim", "") if no_lpips else perceptual_kind(lpips_dir)
    if kind == "ssim" and not no_lpips:
        run.out.warn(f"no LPIPS ({reason}): training with L1 + (1 - SSIM) instead")
    settings = DecoderSettings(
        weights=str(weights), config=None if run.config is None else str(run.config), init=init,
        image_decoder=None if image_decoder is None else str(image_decoder), perceptual=kind,
        lpips_dir=None if lpips_dir is None else str(lpips_dir), adversarial=adversarial, disc_start=disc_start,
        disc_weight=disc_weight,
    )  # fmt: skip

    def make_objective():
        clips = []
        if run.validation_every:
            from toonctl.io.clips import discover_clips
            from toonctl.training.validation import validation_items

            records = discover_clips(run.validation_clips or run.data)
            count = len(run.validation_clips) if run.validation_clips else 1
            clips = [item.video.unsqueeze(0) for item in validation_items(records, data, count)]
        return load_objective(settings, clips)

    run.start("decoder", make_objective, settings.to_dict(), data)


def _is_default(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is None or source.name == "DEFAULT"
