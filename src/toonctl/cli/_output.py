"""One output object per command: progress and logs on stderr (Rich), results on stdout.

Modes: human (default), ``--json`` (one JSON object per result on stdout, no progress) and
``-q``/``--quiet`` (results only). Progress bars also switch off when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress


def examples_epilog(examples: list[tuple[str, str]]) -> str:
    """The "Examples" section that ends every command's --help."""
    lines = ["Examples:"]
    for title, command in examples:
        lines += [f"  {title}:", f"    $ {command}"]
    return "\n\n".join(lines)


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet or json_mode
        self.err = Console(stderr=True, highlight=False)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and self.err.is_terminal

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/] {message}")

    def result(self, message: str, *, mark: str = "✓", **fields: Any) -> None:
        """The command's result: ``✓ message`` (``mark="✗"`` for a partial failure, e.g. a batch with failed
        shots) or, with --json, ``{"message": ..., **fields}``."""
        if self.json_mode:
            print(json.dumps({"message": message, **fields}, default=str), flush=True)
        else:
            print(f"{mark} {message}", flush=True)

    def record(self, **fields: Any) -> None:
        """A JSON line for scripts (--json only): one per shot or per item."""
        if self.json_mode:
            print(json.dumps(fields, default=str), flush=True)

    @contextlib.contextmanager
    def progress(self) -> Iterator[Progress | None]:
        """A Rich progress display on stderr, or None when progress is off."""
        if not self.show_progress:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # ~20 ms

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=False) as progress:
            yield progress
