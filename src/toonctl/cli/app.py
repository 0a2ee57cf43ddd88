"""The ``toonctl`` application: wiring only. Each command lives in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from toonctl import __version__

app = typer.Typer(
    name="toonctl",
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


def main() -> None:
    app()
