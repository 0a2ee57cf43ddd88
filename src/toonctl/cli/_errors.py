"""How failures become one ``Error: ...`` line, a hint and an exit code.

Exit codes (documented in README.md):

====  ============================================================
0     success
1     an error (bad input file, missing weights, corrupt checkpoint, out of memory, ...)
2     bad usage: unknown option, out-of-range value (reported by Typer)
3     ``batch``: at least one shot failed (the others completed)
130   interrupted (Ctrl-C); no partial output file is left behind
====  ============================================================

``TOONCTL_DEBUG=1`` prints the traceback too.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer

from toonctl.errors import OptionError, ToonctlError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

DEBUG_HINT = "set TOONCTL_DEBUG=1 to see the traceback"
F = TypeVar("F", bound=Callable)


def debug_enabled() -> bool:
    return os.environ.get("TOONCTL_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> tuple[str, str | None]:
    """``(message, hint)`` for an exception, most specific first."""
    if isinstance(exc, ToonctlError):
        return str(exc), exc.hint
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return "out of memory", "try --dtype fp16, a smaller --size, or --offload model"
    if isinstance(exc, MemoryError):
        return "out of memory", "close other programs or use a smaller --size"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}", None
    return f"internal error: {type(exc).__name__}: {exc}", DEBUG_HINT


def report(exc: BaseException) -> None:
    """Print ``Error: ...`` (+ hint) to stderr, and the traceback under TOONCTL_DEBUG=1."""
    message, hint = describe(exc)
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"Error: {message}", file=sys.stderr)
    if hint and not (debug_enabled() and hint == DEBUG_HINT):
        print(f"Hint: {hint}", file=sys.stderr)


def handle_errors(command: F) -> F:
    """Wrap a command: user errors -> exit 1 with one line, bad option values (``OptionError``) -> exit 2,
    Ctrl-C -> exit 130, never a bare traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.BadParameter):  # Typer reports usage errors itself (exit 2)
            raise
        except OptionError as exc:  # the library's word for a bad option value: a usage error too
            hint = None if exc.option is None else "--" + exc.option.replace("_", "-")
            raise typer.BadParameter(str(exc), param_hint=hint) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            report(exc)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]
