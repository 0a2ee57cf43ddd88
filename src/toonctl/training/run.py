"""The run folder of ``toonctl train``: config snapshot, checkpoints (atomic, last K kept), resume checks.

Layout of ``RUN/``::

    config.json                 the settings the run was started with (a resume must match them)
    checkpoints/step-0000100/   accelerate's save_state (models, optimizer, scheduler, RNG) + trainer_state.json
    logs/                       TensorBoard events, or metrics.csv when TensorBoard is not installed
    validation/step-0000100.gif validation interpolations

A checkpoint is written into ``checkpoints/.step-0000100.partial`` and renamed once complete, so a crash or a
Ctrl-C mid-write never leaves a checkpoint that looks whole. Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from toonctl.errors import ToonctlError
from toonctl.io.atomic import write_text_atomic

CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# Settings a resume may change (they do not change the numbers of the run, only its length and outputs).
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "validation_every",
        "log_every",
        "num_workers",
        "validation_steps",
    }
)


class RunError(ToonctlError):
    """The run folder cannot be used as asked (exists already, nothing to resume, other settings, ...)."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_settings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names (dotted) of settings that differ, except those in ``RESUMABLE_CHANGES``; one line each."""
    old, new = flatten(saved), flatten(current)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key.rsplit(".", 1)[-1] in RESUMABLE_CHANGES or key == "toonctl_version":
            continue
        if _normalise(old.get(key)) != _normalise(new.get(key)):
            lines.append(f"{key}: {old.get(key)!r} in the run, {new.get(key)!r} now")
    return lines


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class RunFolder:
    """One training run's folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    # -- config ------------------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(
                f"{self.root} is not a training run (no {CONFIG_FILE})",
                hint="give the --output-dir of a `toonctl train` run",
            ) from None
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read {self.config_path}: {exc}") from None

    def start(self, config: Mapping[str, Any], *, resume: bool, write: bool = True) -> int:
        """Check the folder for a new run or a resume and (``write``: the main process) write the snapshot;
        the step to start from.

        Raises:
            RunError: a new run into a folder that holds one; a resume of a folder without a run, or with
                other settings (every differing setting is named).
        """
        if resume:
            if not self.config_path.is_file():
                raise RunError(
                    f"nothing to resume in {self.root} (no {CONFIG_FILE})", hint="drop --resume to start a new run"
                )
            differences = differing_settings(self.read_config(), config)
            if differences:
                raise RunError(
                    f"cannot resume {self.root} with other settings:\n  " + "\n  ".join(differences),
                    hint="resume with the run's settings (see its config.json), or start a new --output-dir",
                )
            return self.latest_step()
        if self.config_path.exists() or self.checkpoints():
            raise RunError(
                f"{self.root} already holds a training run",
                hint="add --resume to continue it, or choose another --output-dir",
            )
        if write:
            self.write_config(config)
        return 0

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, json.dumps(config, indent=2, default=str) + "\n")

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for path in self.checkpoints_dir.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and path.is_dir() and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest_step(self) -> int:
        found = self.checkpoints()
        return found[-1][0] if found else 0

    def checkpoint(self, step: int | None = None) -> Path:
        """The checkpoint of ``step`` (None: the latest).

        Raises:
            RunError: there is none.
        """
        found = dict(self.checkpoints())
        if not found:
            raise RunError(f"{self.root} has no checkpoint yet", hint="checkpoints are saved every --checkpoint-every")
        step = max(found) if step is None else step
        if step not in found:
            shown = ", ".join(str(s) for s in sorted(found))
            raise RunError(f"{self.root} has no checkpoint of step {step} (it has {shown})")
        return found[step]

    def partial_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f".{checkpoint_name(step)}.partial"

    def begin_checkpoint(self, step: int) -> Path:
        """A fresh temporary folder to save the checkpoint of ``step`` into (main process only)."""
        partial = self.partial_dir(step)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        return partial

    def commit_checkpoint(self, step: int, state: Mapping[str, Any], *, keep: int) -> Path:
        """Write ``trainer_state.json``, rename the temporary folder into place, drop all but ``keep`` newest."""
        partial = self.partial_dir(step)
        write_text_atomic(partial / STATE_FILE, json.dumps(dict(state), indent=2) + "\n")
        final = self.checkpoints_dir / checkpoint_name(step)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        self.prune(keep)
        return final

    def prune(self, keep: int) -> list[Path]:
        found = self.checkpoints()
        removed = [path for _, path in found[: max(0, len(found) - max(1, keep))]]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        for stale in self.checkpoints_dir.glob(".step-*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        return removed


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))


def model_files(checkpoint: Path, names: Iterable[str]) -> dict[str, Path]:
    """The weight files accelerate's ``save_state`` wrote for the prepared modules ``names`` (in prepare
    order): ``model.safetensors``, ``model_1.safetensors``, ... (or ``.bin``)."""
    files = {}
    for index, name in enumerate(names):
        stem = "model" if index == 0 else f"model_{index}"
        for suffix in (".safetensors", ".bin"):
            if (Path(checkpoint) / f"{stem}{suffix}").is_file():
                files[name] = Path(checkpoint) / f"{stem}{suffix}"
                break
        else:
            raise RunError(f"{checkpoint} has no weights of {name} ({stem}.safetensors)")
    return files
