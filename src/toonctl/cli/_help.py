"""Help-screen details Typer does not let us set per option.

Typer's help lists a type for every option, ``<bool>`` for flags too, which reads as if ``--quiet`` took a
value. The command and group classes here leave the type column of flags empty. Every command and group
of the application is made with them (``cls=``).
"""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup


def _without_flag_types(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown in the type column instead of "<bool>"
    return params


class Command(TyperCommand):
    def get_params(self, ctx) -> list:
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _without_flag_types(super().get_params(ctx))
