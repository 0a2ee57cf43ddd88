"""``toonctl train``: fine-tune ToonCrafter on your own clips (one command file per objective, plus export).

To add an objective's command: a module with a ``@training_command`` function (``_common``) and one line in
``COMMANDS``.
"""

from __future__ import annotations

import typer

from toonctl.cli._help import Command, Group
from toonctl.cli._output import examples_epilog
from toonctl.cli.train import decoder as decoder_cmd
from toonctl.cli.train import export as export_cmd
from toonctl.cli.train import sketch_encoder as sketch_encoder_cmd
from toonctl.cli.train import unet as unet_cmd

train_app = typer.Typer(
    cls=Group,
    help="Fine-tune ToonCrafter on your own clips: UNet (toon rectification, full, LoRA), export.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMANDS = [  # (name, function, examples)
    ("unet", unet_cmd.unet, unet_cmd.EXAMPLES),
    ("sketch-encoder", sketch_encoder_cmd.sketch_encoder, sketch_encoder_cmd.EXAMPLES),
    ("decoder", decoder_cmd.decoder, decoder_cmd.EXAMPLES),
    ("export", export_cmd.export, export_cmd.EXAMPLES),
]
for _name, _function, _examples in COMMANDS:
    train_app.command(_name, cls=Command, epilog=examples_epilog(_examples))(_function)
