"""Help-screen details Typer does not let us set per option.

* Typer's help lists a type for every option, ``<bool>`` for flags too, which reads as if ``--quiet``
  took a value: the type column of flags is left empty.
* Typer keeps the line breaks of a docstring, so a paragraph wrapped at our source width comes out
  ragged at any other terminal width: each paragraph is joined into one line and Rich wraps it.

Every command and group of the application is made with these classes (``cls=``).
"""

from __future__ import annotations

import re

from typer.core import TyperCommand, TyperGroup


def reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph (paragraphs are separated by blank lines)."""
    if not text:
        return text
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p.strip()) for p in re.split(r"\n\s*\n", text.strip()))


def _without_flag_types(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown in the type column instead of "<bool>"
    return params


class Command(TyperCommand):
    def __init__(self, *args, help: str | None = None, **kwargs) -> None:
        super().__init__(*args, help=reflow(help), **kwargs)

    def get_params(self, ctx) -> list:
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _without_flag_types(super().get_params(ctx))
