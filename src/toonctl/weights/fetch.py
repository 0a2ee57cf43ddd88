"""Download the official files of ``Doubiiu/ToonCrafter`` with huggingface_hub (``toonctl weights fetch``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from toonctl.errors import ToonctlError, WeightsNotFoundError
from toonctl.weights.files import HF_REPO, OFFICIAL_FILES, check_dest, weights_dir


def fetch(
    files: Iterable[str], dest: str | Path | None = None, *, progress: bool = True, repo_id: str = HF_REPO
) -> list[Path]:
    """Download official files into ``dest`` with ``huggingface_hub.hf_hub_download(..., local_dir=dest)``.

    What huggingface_hub (checked in 2.4.0) does by itself:

    * ``HF_TOKEN`` (then the token file under ``HF_HOME``) authenticates; ``HF_ENDPOINT`` picks a mirror.
    * ``HF_HUB_OFFLINE=1``: no request is made. A file already in ``dest`` is returned as is; a missing one
      raises ``LocalEntryNotFoundError``, reported here as ``WeightsNotFoundError``.
    * A file already in ``dest`` whose recorded etag (``dest/.cache/huggingface/download/*.metadata``)
      matches the Hub is not downloaded again; without that record it is hashed and kept if the sha256
      matches. If the file is in the ``HF_HOME`` cache it is copied from there.
    * Resuming: a dropped connection is retried with HTTP ``Range`` requests inside the same call, and Xet
      downloads (``hf_xet``) reuse the chunks cached under ``HF_HOME/xet``. A download interrupted by killing
      the process is *not* resumed by plain HTTP: the partial file has a per-process name and is deleted.
    * The file is written to a temporary name and renamed: a file in ``dest`` is never half-written.

    Args:
        files: names from ``OFFICIAL_FILES``.
        dest: the weights folder (default ``weights_dir()``).
        progress: huggingface_hub's progress bars (on stderr).
        repo_id: the Hub repository.

    Returns:
        The local path of each file, in order.
    """
    import huggingface_hub
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    names = list(files)
    unknown = [n for n in names if n not in OFFICIAL_FILES]
    if unknown:
        raise ToonctlError(f"unknown file(s) {', '.join(unknown)}; the repository has {', '.join(OFFICIAL_FILES)}")
    dest = Path(dest) if dest is not None else weights_dir()
    check_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)
    silence = not progress and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        paths = []
        for name in names:
            try:
                local = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=name, local_dir=dest)
            except Exception as exc:
                mapped = _download_error(exc, name, repo_id, dest)
                if mapped is None:
                    raise
                raise mapped from exc
            paths.append(Path(local))
        return paths
    finally:
        if silence:
            enable_progress_bars()
        for name in names:
            remove_stale_lock(dest / ".cache" / "huggingface" / "download" / f"{name}.lock")


def remove_stale_lock(lock: Path) -> None:
    """Delete a download's lock file once no process holds it (huggingface_hub's filelock leaves it behind,
    also after a failed download). A lock another process holds is left alone."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except OSError:
        pass  # held by another download: theirs to remove
    finally:
        os.close(fd)


def _download_error(exc: Exception, name: str, repo_id: str, dest: Path) -> ToonctlError | None:
    """One-line errors for huggingface_hub's failures (None: not a download failure, re-raise it)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    manual = f"or download {name} from https://huggingface.co/{repo_id} into {dest}/ yourself"
    if isinstance(exc, LocalEntryNotFoundError):  # offline, or the Hub could not be reached
        if constants.HF_HUB_OFFLINE or isinstance(exc.__cause__, OfflineModeIsEnabled):
            return WeightsNotFoundError(
                f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE) and {dest / name} does not exist",
                hint=f"unset HF_HUB_OFFLINE, {manual}",
            )
        return WeightsNotFoundError(
            f"cannot download {name}: the Hugging Face Hub cannot be reached",
            hint=f"check your connection (or HF_ENDPOINT / proxy settings), {manual}",
        )
    if isinstance(exc, GatedRepoError):
        return ToonctlError(f"{repo_id} is gated: accept its terms on the Hub", hint="then set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ToonctlError(f"repository {repo_id} not found (or private)", hint="set HF_TOKEN if it is private")
    if isinstance(exc, (EntryNotFoundError, RevisionNotFoundError)):
        return WeightsNotFoundError(f"{name} is not in {repo_id}", hint=f"see https://huggingface.co/{repo_id}")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "set HF_TOKEN" if status in (401, 403) else "try again later"
        return ToonctlError(f"downloading {name} failed (HTTP {status}): {first}", hint=hint)
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(("httpx", "requests")):
        return WeightsNotFoundError(
            f"cannot download {name}: network error ({type(exc).__name__})", hint=f"check your connection, {manual}"
        )
    return None
