"""Which weights to run and their architecture: ``resolve_weights`` (``--weights``/``--config``), ``config_for``,
``load_weights``, and ``find_weights_file`` for the files beside the model (control stages, the extractor)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from toonctl.errors import CheckpointError, ConfigError, ToonctlError, WeightsNotFoundError
from toonctl.weights.files import HF_REPO, WEIGHTS_ENV, weights_dir

if TYPE_CHECKING:
    import torch

    from toonctl.models.configs import ToonCrafterConfig


def config_for(path: str | Path, config: str | Path | ToonCrafterConfig | None = None) -> ToonCrafterConfig:
    """The architecture of the weights at ``path``.

    In order: ``config`` when given (an official yaml or our ``config.json``); a converted directory's own
    ``config.json``; a ``config.yaml`` / ``config.json`` next to a checkpoint file; the released 512 model.
    """
    from toonctl.convert.components import is_converted_dir, read_converted_config
    from toonctl.convert.config import load_config
    from toonctl.models.configs import ToonCrafterConfig

    if isinstance(config, ToonCrafterConfig):
        return config
    if config is not None:
        return load_config(config)
    path = Path(path)
    if is_converted_dir(path):
        return read_converted_config(path)
    for sibling in ("config.yaml", "config.json"):
        if (path.parent / sibling).is_file():
            return load_config(path.parent / sibling)
    return ToonCrafterConfig()


def load_weights(
    path: str | Path,
    config: str | Path | ToonCrafterConfig | None = None,
    *,
    components: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, object]:
    """Load a checkpoint file or a converted directory (what ``resolve_weights`` returns) into our modules.

    Returns ``load_components``' shape: ``{name: module}`` plus ``"schedule"``. ``dtype`` None keeps a
    converted directory's stored dtype and loads a checkpoint file in float32.
    """
    import torch

    from toonctl.convert.components import is_converted_dir, load_converted, read_converted_config
    from toonctl.convert.tooncrafter import load_components
    from toonctl.errors import ConfigError

    path = Path(path)
    config = config_for(path, config)
    if is_converted_dir(path):
        if config != read_converted_config(path):
            raise ConfigError(f"the config given differs from {path / 'config.json'}", hint="leave out --config")
        return load_converted(path, components=components, device=device, dtype=dtype)
    return load_components(path, config, components=components, device=device, dtype=dtype or torch.float32)


def find_weights(folder: Path) -> tuple[Path | None, list[str]]:
    """The model a weights folder offers: the first complete converted directory (by name), else
    ``model.ckpt``, else ``model.safetensors``. Returns ``(path or None, the places looked at)``."""
    from toonctl.convert.components import is_converted_dir, missing_files

    looked = [f"{folder}/<name>/ (converted models)", str(folder / "model.ckpt"), str(folder / "model.safetensors")]
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if is_converted_dir(sub) and not missing_files(sub):
                return sub, looked
    for name in ("model.ckpt", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name, looked
    return None, looked


def find_weights_file(
    given: str | Path | None, names: Iterable[str], *, beside: str | Path | None = None, option: str = "--weights"
) -> Path:
    """A weights file other than the model (a control stage, the sketch extractor).

    ``given`` when it exists; else the first of ``names`` in the folder of ``beside`` (the model's weights: a
    folder, or a file whose folder is searched), then in the weights folder.

    Raises:
        WeightsNotFoundError: ``given`` does not exist, or none of ``names`` was found (the message lists
            the places looked at; ``option`` is the flag that names the file).
    """
    names = tuple(names)
    if given is not None:
        given = Path(given)
        if given.is_file():
            return given
        raise WeightsNotFoundError(f"{option} {given} does not exist", hint="check the path")
    folders = [weights_dir()]
    if beside is not None:
        beside = Path(beside)
        folders.insert(0, beside if beside.is_dir() else beside.parent)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(f / names[0]) for f in folders)
    raise WeightsNotFoundError(
        f"no {names[0]} found (looked for {looked})",
        hint=f"run `toonctl weights fetch --sketch`, or pass {option} PATH",
    )


def resolve_weights(
    weights: str | Path | None = None, config: str | Path | None = None
) -> tuple[Path, ToonCrafterConfig]:
    """Find the model to run and its architecture (what the CLI's ``--weights``/``--config`` resolve to).

    ``weights``: a checkpoint file, a converted directory, or a folder to search like the weights folder.
    Without it, the weights folder (``$TOONCTL_WEIGHTS`` or ``weights/``) is searched (``find_weights``).
    The config comes from ``config_for``.

    Raises:
        WeightsNotFoundError: nothing found; the message lists every place looked at.
    """
    from toonctl.convert.components import is_converted_dir

    if weights is not None:
        weights = Path(weights)
        if weights.is_file():
            return weights, _checked_file_config(weights, config)
        if is_converted_dir(weights):
            return weights, config_for(weights, config)
        if not weights.is_dir():
            raise WeightsNotFoundError(f"--weights {weights} does not exist")
        folder, origin = weights, f"--weights {weights}"
    else:
        folder = weights_dir()
        origin = f"${WEIGHTS_ENV}" if os.environ.get(WEIGHTS_ENV) else "the default weights folder"
    found, looked = find_weights(folder)
    if found is None and (folder / "config.json").is_file():
        from toonctl.convert.components import read_converted_config

        read_converted_config(folder)  # a converted model with a broken config.json: say what is wrong with it
    if found is None:
        skipped = _broken_converted(folder)
        places = "\n".join([*(f"  {p}" for p in looked), *(f"  skipped {p}" for p in skipped)])
        raise WeightsNotFoundError(
            f"no model weights found in {folder} ({origin}); looked for:\n{places}",
            hint=f"run `toonctl weights fetch --dest {folder}` (downloads {HF_REPO} model.ckpt, 10.5 GB), "
            "`toonctl weights import FILE`, or pass --weights PATH",
        )
    return found, (_checked_file_config(found, config) if found.is_file() else config_for(found, config))


def _broken_converted(folder: Path) -> list[str]:
    """Sub-folders of ``folder`` with a ``config.json`` that cannot be read as a converted model's, and why."""
    from toonctl.convert.components import read_converted_config

    broken = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else ():
        if (sub / "config.json").is_file():
            try:
                read_converted_config(sub)
            except ToonctlError as exc:
                broken.append(f"{sub}: {exc}")
    return broken


_NOT_CHECKPOINTS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF file (WebP/AVI/WAV)",
}


def _checked_file_config(path: Path, config: str | Path | None) -> ToonCrafterConfig:
    """``config_for(path, config)`` after two cheap checks, so that a wrong file is named as such before any
    input is checked against an architecture it does not have.

    * the file is not an image (``--weights key.png``);
    * without a config (none given, none beside the file), a safetensors file's UNet input convolution must
      have the released model's shape: a tiny or custom model without its config is refused here, not later
      with a size error computed from the wrong architecture.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, what in _NOT_CHECKPOINTS.items():
        if head.startswith(magic):
            raise CheckpointError(
                f"{path} is not a checkpoint: it is {what}",
                hint="--weights takes a model.ckpt, a .safetensors file or a converted folder",
            )
    is_safetensors = len(head) >= 9 and head[8:9] == b"{"  # other unknown bytes: the loader names the problem
    resolved = config_for(path, config)
    sibling = any((path.parent / name).is_file() for name in ("config.yaml", "config.json"))
    if config is None and not sibling and is_safetensors:
        shape = _safetensors_shape(path, "model.diffusion_model.input_blocks.0.0.weight")
        expected = resolved.unet.model_channels
        if shape is not None and shape[0] != expected:
            raise ConfigError(
                f"{path} is not the released ToonCrafter-512 architecture (its UNet has {shape[0]} base channels,"
                f" the 512 model {expected}) and no config.yaml is beside it",
                hint="pass --config with the model's config.yaml, or put it next to the checkpoint",
            )
    return resolved


def _safetensors_shape(path: Path, key: str) -> list[int] | None:
    """The shape of ``key`` from a safetensors header (None if absent or unreadable)."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > 100_000_000:
                return None
            header = json.loads(f.read(header_len))
        return list(header[key]["shape"]) if key in header else None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
