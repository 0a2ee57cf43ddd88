"""The objectives by name, and exporting a run: what ``toonctl train export RUN`` does.

A run's ``config.json`` names its objective and holds the objective's settings; ``OBJECTIVES`` maps the name
to a ``from_settings(settings) -> Objective`` function (``module:function``, imported when needed), which
rebuilds the untrained objective (base model loaded, adapters added) so a checkpoint's weights load into it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from toonctl.training.engine import load_trained_modules
from toonctl.training.run import RunError, RunFolder

OBJECTIVES = {
    "unet": "toonctl.training.unet_objective:from_settings",
    "sketch-encoder": "toonctl.training.sketch_objective:from_settings",
    "decoder": "toonctl.training.decoder_objective:from_settings",
}


def objective_from_settings(name: str, settings: dict):
    """The objective ``name`` rebuilt from a run's ``objective_settings``."""
    if name not in OBJECTIVES:
        raise RunError(f"unknown objective {name!r} in the run's config (known: {', '.join(OBJECTIVES)})")
    module_name, function = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module_name), function)(settings)


def export_run(
    run_dir: str | Path, output: str | Path, *, step: int | None = None, merge: bool = False
) -> tuple[Path, int]:
    """Export checkpoint ``step`` (None: the latest) of the run in ``run_dir`` to ``output``; ``merge``: an
    adapter run (LoRA) as a full checkpoint with the adapter merged in.

    Returns:
        ``(written path, step)``.

    Raises:
        RunError: not a run, no such checkpoint. The objective's export errors (CheckpointError, ...).
    """
    run = RunFolder(run_dir)
    config = run.read_config()
    checkpoint = run.checkpoint(step)
    settings = dict(config.get("objective_settings") or {})
    objective = objective_from_settings(config["objective"], settings)
    load_trained_modules(objective, checkpoint)
    base = settings.get("weights")
    base = Path(base) if base else None
    if merge:
        if getattr(objective, "lora", None) is None:
            raise RunError(f"{run_dir} did not train an adapter: its export is already a full checkpoint")
        written = objective.export(Path(output), base, merge=True)
    else:
        written = objective.export(Path(output), base)
    return Path(written), int(checkpoint.name.split("-")[-1])
