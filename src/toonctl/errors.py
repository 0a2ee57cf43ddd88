"""Exceptions for user-facing failures. The CLI maps each to one ``Error: ...`` line and an exit code."""

from __future__ import annotations


class ToonctlError(Exception):
    """Base class of every error a user can act on."""

    hint: str | None = None
    exit_code: int = 1  # the CLI's exit status for this error (2: a bad option value, like Typer's usage errors)

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(ToonctlError, ValueError):
    """A config file (a model's, a shot's ``shot.yaml``) is missing, unreadable or inconsistent."""


class CheckpointError(ToonctlError):
    """A checkpoint file cannot be read (missing, truncated, not a checkpoint)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not match the architecture."""

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] = (),
        unexpected: list[str] = (),
        mismatched: list[str] = (),
        hint: str | None = None,
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        lines = [message]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")
                lines.append(f"  {len(keys)} {label}: {shown}")
        super().__init__("\n".join(lines), hint=hint)


class InputImageError(ToonctlError):
    """An input image (or a folder of them) is missing, unreadable or unusable."""


class UsageError(ToonctlError):
    """A bad value of a command-line option that only the library can judge (exit 2, as Typer's own)."""

    exit_code = 2


class UnsupportedSizeError(ToonctlError, ValueError):
    """A frame size the model cannot process (sides must be multiples of the latent grid)."""


class RequestedSizeError(UnsupportedSizeError, UsageError):
    """A size the user asked for (``--size``, ``size:`` in shot.yaml) is not one the model can run."""


class OutOfMemoryError(ToonctlError):
    """The run needs more memory than the device has (estimated before loading, or an allocation failed)."""

    hint = "try --offload model, --decoder chunked, a smaller --size, or --dtype bf16/fp16 on a GPU"


class OptionError(UsageError, ValueError):
    """A bad value for a setting or load option, naming the option (the CLI reports it as Typer reports a bad
    flag value, exit 2).

    ``option`` is the field name (``device_map``); the CLI shows it as its flag (``--device-map``).
    """

    def __init__(self, message: str, *, option: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.option = option


class WeightsNotFoundError(ToonctlError):
    """The model weights are not where they were looked for."""

    hint = "run `toonctl weights fetch` (downloads model.ckpt into weights/), or pass --weights PATH"


class OutputError(ToonctlError):
    """The output cannot be written (unsupported suffix, unwritable folder, ...)."""


class DiskFullError(OutputError):
    """A write failed because the disk (or quota) is full; nothing partial was left."""

    hint = "free some space on that disk, or write somewhere else"


class NonFiniteError(ToonctlError):
    """A stage of a run produced NaN or inf (the output would be black or garbage)."""

    hint = (
        "try --dtype fp32 (half precision can overflow), another --steps or --seed; "
        "TOONCTL_DEBUG=1 shows where it happened"
    )


class DataError(ToonctlError):
    """A dataset, manifest or clip is missing, unreadable or unusable."""
