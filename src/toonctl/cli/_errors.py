"""How failures become one ``Error: ...`` line, a hint and an exit code.

Exit codes (documented in README.md):

====  ============================================================
0     success
1     an error (bad input file, missing weights, corrupt checkpoint, out of memory, disk full, ...)
2     bad usage: unknown option, out-of-range or malformed value (``--size 100x200`` too)
3     ``batch``: at least one shot failed (the others completed)
130   interrupted (Ctrl-C); no partial output file is left behind
====  ============================================================

``TOONCTL_DEBUG=1`` prints the traceback too.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer

from toonctl.errors import DiskFullError, OptionError, OutOfMemoryError, ToonctlError

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
    if is_out_of_memory(exc):
        return "out of memory", OutOfMemoryError.hint
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f": {exc.filename}" if exc.filename else ""
        return f"no space left on the device{where}", DiskFullError.hint
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}", None
    return f"internal error: {type(exc).__name__}: {exc}", DEBUG_HINT


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's ``OutOfMemoryError``, ``MemoryError``, or the CPU allocator's RuntimeError ("can't allocate")."""
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):  # torch's, without importing it
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def exit_code(exc: BaseException) -> int:
    """The exit status of a failed command: the error's own (2 for a bad option value), else 1."""
    return getattr(exc, "exit_code", EXIT_ERROR) if isinstance(exc, ToonctlError) else EXIT_ERROR


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
            raise typer.Exit(exit_code(exc)) from None

    return wrapper  # type: ignore[return-value]
