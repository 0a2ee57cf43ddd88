"""The ``toonctl`` application: wiring only. Each command lives in its own module."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from toonctl import __version__
from toonctl.cli import batch as batch_cmd
from toonctl.cli import decode_bench as decode_bench_cmd
from toonctl.cli import eval as eval_cmd
from toonctl.cli import interpolate as interpolate_cmd
from toonctl.cli import sketch as sketch_cmd
from toonctl.cli._errors import EXIT_INTERRUPTED
from toonctl.cli._help import Command, Group
from toonctl.cli._output import examples_epilog
from toonctl.cli.dataset import dataset_app
from toonctl.cli.train import train_app
from toonctl.cli.weights import weights_app

app = typer.Typer(
    name="toonctl",
    cls=Group,
    help="Generative cartoon interpolation (ToonCrafter): in-betweens from key drawings.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"toonctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Generative cartoon interpolation (ToonCrafter): in-betweens from key drawings."""


COMMANDS = [  # (name, function, examples); None: the function's name
    (None, interpolate_cmd.interpolate, interpolate_cmd.EXAMPLES),
    (None, batch_cmd.batch, batch_cmd.EXAMPLES),
    ("decode-bench", decode_bench_cmd.decode_bench, decode_bench_cmd.EXAMPLES),
    ("sketch-interp", sketch_cmd.sketch_interp, sketch_cmd.SKETCH_INTERP_EXAMPLES),
    (None, sketch_cmd.colorize, sketch_cmd.COLORIZE_EXAMPLES),
    (None, sketch_cmd.sketch, sketch_cmd.SKETCH_EXAMPLES),
    ("eval", eval_cmd.evaluate, eval_cmd.EXAMPLES),
]
for name, function, examples in COMMANDS:
    app.command(name, cls=Command, epilog=examples_epilog(examples))(function)
app.add_typer(weights_app, name="weights")
app.add_typer(dataset_app, name="dataset")
app.add_typer(train_app, name="train")


def main() -> None:
    _terminate_like_ctrl_c()
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == EXIT_INTERRUPTED:
            _exit_interrupted()
        raise


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (``kill``, a job scheduler, ``timeout``) takes the Ctrl-C path: temporaries are removed, exit 130."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): leave the default
        pass


def _exit_interrupted() -> None:
    """Exit with status 130 now, skipping interpreter shutdown.

    The command has already cleaned up and printed "Interrupted.". A Ctrl-C that landed inside ``exec()``
    of a string (dataclasses and lazy imports do this) leaves CPython's "unhandled KeyboardInterrupt"
    flag set although we handled it, and ``python -m toonctl`` would then kill itself with SIGINT at
    shutdown: status -2 instead of 130 for the scripts that check it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)
