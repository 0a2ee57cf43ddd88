"""Exceptions for user-facing failures. The CLI maps each to one ``Error: ...`` line and an exit code."""

from __future__ import annotations


class ToonctlError(Exception):
    """Base class of every error a user can act on."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(ToonctlError):
    """A model config file is missing, unreadable or inconsistent."""


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


class UnsupportedSizeError(ToonctlError, ValueError):
    """A frame size the model cannot process (sides must be multiples of the latent grid)."""


class OptionError(ToonctlError, ValueError):
    """A bad value for a setting or load option (a usage error: the CLI exits 2 naming the option).

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
