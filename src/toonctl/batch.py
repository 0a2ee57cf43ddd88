"""Shot batches: every subfolder of SHOTS is a shot, rendered to OUT/<shot>.<format>, resumably.

A shot folder holds its key frames (image files, in natural name order), optionally ``prompt.txt``,
optionally a ``sketches/`` folder (sketches named by output frame index steer the shot, as
``sketch-interp`` does) and optionally ``shot.yaml`` with setting overrides (any ``InterpolateSettings`` field, e.g.
``frame_stride: 5``, ``inbetweens: 7``, ``size: 320x512``, ``loop: true``).

Resuming needs no manifest: outputs are written under a temporary name and renamed when complete,
so an output that exists is a finished shot. A re-run skips finished shots, removes temporaries a
crash left behind, and redoes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toonctl.errors import ConfigError, InputImageError, WeightsNotFoundError
from toonctl.presets import InterpolateSettings, LoadOptions, parse_size

SETTINGS_FILE = "shot.yaml"
SKETCHES_FOLDER = "sketches"  # optional: sketches named by output frame index, as for `sketch-interp`
PROMPT_FILE = "prompt.txt"
PARTIAL_MARKER = ".partial-"


@dataclass
class Shot:
    name: str
    directory: Path
    output: Path
    keyframes: list[Path]
    settings: InterpolateSettings | None  # None when the shot's own files are invalid (see ``error``)
    error: str | None = None

    @property
    def done(self) -> bool:
        """A finished output is there (an empty folder is not a finished folder of frames)."""
        from toonctl.io.video import output_complete

        return output_complete(self.output)

    @property
    def has_sketches(self) -> bool:
        return (self.directory / SKETCHES_FOLDER).is_dir()


def discover_shots(shots_dir: Path, out_dir: Path, base: InterpolateSettings, suffix: str) -> list[Shot]:
    """The shots under ``shots_dir`` in natural name order; a shot with bad files carries ``error``."""
    from toonctl.io.frames import list_frame_files, natural_key

    if not shots_dir.is_dir():
        raise InputImageError(f"shots folder not found: {shots_dir}", hint="SHOTS is a folder of shot folders")
    own_output = out_dir.resolve()  # `batch shots -o shots/out`: the output folder is not a shot
    folders = sorted(
        (p for p in shots_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.resolve() != own_output),
        key=natural_key,
    )
    shots = []
    for folder in folders:
        output = out_dir / f"{folder.name}{suffix}" if suffix != "/" else out_dir / folder.name
        keyframes = list_frame_files(folder)
        try:
            settings = shot_settings(folder, base)
            error = None if len(keyframes) >= 2 else f"needs at least two key frames, found {len(keyframes)}"
        except ValueError as exc:
            settings, error = None, str(exc)
        shots.append(Shot(folder.name, folder, output, keyframes, settings, error))
    return shots


def shot_settings(folder: Path, base: InterpolateSettings) -> InterpolateSettings:
    """``base`` with the shot's ``prompt.txt`` and ``shot.yaml`` applied."""
    import yaml

    overrides: dict = {}
    prompt_file = folder / PROMPT_FILE
    if prompt_file.is_file():
        overrides["prompt"] = " ".join(prompt_file.read_text(encoding="utf-8").split())
    settings_file = folder / SETTINGS_FILE
    if settings_file.is_file():
        try:
            data = yaml.safe_load(settings_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{settings_file} is not valid yaml: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{settings_file} must be a mapping of setting: value")
        if isinstance(data.get("size"), str):
            data["size"] = parse_size(data["size"])
        overrides.update(data)
    try:
        return base.updated(overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{folder.name}: {exc}") from None


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Delete temporaries that an interrupted run left in ``out_dir``; returns what was removed."""
    import shutil

    removed = []
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            if path.name.startswith(".") and PARTIAL_MARKER in path.name:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
    return removed


def with_sketch_encoder(
    options: LoadOptions, shots: list[Shot], model_weights: Path
) -> tuple[LoadOptions, Exception | None]:
    """``options`` plus the sketch encoder when one of ``shots`` has sketches.

    Returns the options and, when the encoder's file cannot be found, that error: the sketch shots fail with it
    (``prepare_batch_shot``) while the others render.
    """
    from toonctl.pipelines.controls import find_control_weights

    if not any(shot.has_sketches for shot in shots):
        return options, None
    given = options.controls.get("sketch_encoder")
    try:
        path = find_control_weights("sketch_encoder", given, model_weights)
    except WeightsNotFoundError as exc:
        return options, exc
    return options.with_controls(sketch_encoder=path), None


def prepare_batch_shot(shot: Shot, config, sketch_error: Exception | None = None):
    """``(PreparedShot, frame producer)`` of a batch shot: its key frames, and its sketches (``sketches/``
    folder: the ``sketch-interp`` defaults) when it has them. Nothing here needs the model's weights."""
    from toonctl.render import ChainFrames, prepare_shot, shot_sketches

    prepared = prepare_shot(shot.keyframes, shot.output, shot.settings, config)
    sketches = None
    if shot.has_sketches:
        if sketch_error is not None:
            raise sketch_error
        sketches = shot_sketches(shot.directory / SKETCHES_FOLDER, prepared, shot.settings, config)
    return prepared, ChainFrames(sketches=sketches)
