"""Writing files so that a failure never leaves a partial one: a temporary name beside the target, then a rename.

Every file toonctl writes goes through here (reports, line-art pictures) or through ``toonctl.io.video``'s
writers, which use the same naming. Also the check, before any work, that a place is writable: it creates
and removes a probe file, because ``os.access`` says yes to root on ``/proc`` or a read-only mount. Errors
name the user's path, never the temporary, and a full disk is ``DiskFullError`` (a user error with a hint).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from toonctl.errors import DiskFullError, OutputError

PARTIAL_MARKER = ".partial-"  # in every temporary name: ``.<stem>.partial-<pid><suffix>``
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such folder",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EISDIR: "a folder of that name is in the way",
}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def partial_path(path: Path) -> Path:
    """The temporary name of ``path`` while it is being written (hidden, same folder, same suffix)."""
    return path.with_name(f".{path.stem}{PARTIAL_MARKER}{os.getpid()}{path.suffix}")


def is_disk_full(exc: BaseException) -> bool:
    """An ``OSError`` for a full disk or quota, or another library's error whose text says so (safetensors)."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text


def output_error(path: str | Path, exc: BaseException) -> OutputError:
    """The user-facing error for a failed write of ``path`` (``DiskFullError`` when the disk is full)."""
    if is_disk_full(exc):
        return DiskFullError(f"cannot write {path}: no space left on the device")
    reason = _REASONS.get(getattr(exc, "errno", None)) or getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write {path}: {reason}")


def check_writable(path: str | Path, *, folder: str | Path | None = None) -> None:
    """Check, before any work, that ``path`` can be created: make and remove a probe file in ``folder``
    (default: ``path``'s parent).

    Raises:
        OutputError: the folder is missing, not a folder, or refuses a new file (the message names ``path``).
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    if not folder.exists():
        raise OutputError(f"cannot write {path}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is not a folder")
    probe = folder / f".toonctl-probe{PARTIAL_MARKER}{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        remove(probe)  # left by a crashed run with the same process id: the folder is writable
    except OSError as exc:
        if is_disk_full(exc):
            raise output_error(path, exc) from None
        reason = _REASONS.get(exc.errno) or exc.strerror or str(exc)
        raise OutputError(f"cannot write {path}: the folder {folder} does not take new files ({reason})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(out) as temp: write(temp)``: renamed to ``out`` if the block succeeds, else removed.

    An ``OSError`` (or a full disk reported by another library) becomes ``OutputError`` naming ``out``.
    """
    path = Path(path)
    temp = partial_path(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException as exc:
        remove(temp)
        if isinstance(exc, OSError) or is_disk_full(exc):
            raise output_error(path, exc) from exc
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (creating its folder); usual umask permissions."""
    with atomic_path(path) as temp:
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); the file gets the usual umask permissions."""
    with atomic_path(path) as temp:
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(data)
    return Path(path)


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (cleanup: never raises)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
