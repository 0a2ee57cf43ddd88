"""Our own saved form of a ToonCrafter model: one safetensors file per component plus ``config.json``.

A converted directory holds::

    config.json                 ToonCrafterConfig.to_dict() + {"format": "toonctl-components-v1", "dtype": ...}
    unet.safetensors            each module's own state-dict keys (local names, no official prefixes)
    vae.safetensors
    text_encoder.safetensors
    image_encoder.safetensors
    image_proj.safetensors
    schedule.safetensors        the sampler's buffers, always float32

It is written from the official layout (``convert/tooncrafter.py``: ``model.ckpt`` or an official-layout
safetensors) one component at a time, so converting needs about one component's memory on top of the
memory-mapped source. The tensors inference never reads (last text block, ``visual.proj``, ...) are dropped
on the way. ``config.json`` is a valid ``toonctl.convert.config.load_config`` input: the extra keys are ignored there.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from toonctl.convert.tooncrafter import (
    COMPONENTS,
    SCHEDULE_KEYS,
    build_empty,
    check_components,
    load_module,
    load_schedule,
    read_state_dict,
    split_state_dict,
)
from toonctl.dtypes import DTYPE_NAMES, long_name, torch_dtype
from toonctl.errors import CheckpointError, CheckpointMismatchError, ConfigError
from toonctl.models.configs import ToonCrafterConfig

FORMAT = "toonctl-components-v1"
CONFIG_NAME = "config.json"
SCHEDULE = "schedule"
# Every file of a converted directory, in writing order (config.json is written last).
COMPONENT_FILES = {name: f"{name}.safetensors" for name in (*COMPONENTS, SCHEDULE)}
SAVE_DTYPES = {long: torch_dtype(long) for long in DTYPE_NAMES.values()}  # "float32" -> torch.float32, ...

ProgressFn = Callable[[str, int, int], None]  # (component name, index starting at 1, number of components)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"`` (the spelling stored in ``config.json``)."""
    try:
        return long_name(dtype)
    except ValueError:
        raise ValueError(f"cannot save weights as {dtype}; choose one of {', '.join(SAVE_DTYPES)}") from None


def save_components(
    source: str | Path | Mapping[str, torch.Tensor],
    config: ToonCrafterConfig,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Convert an official-layout checkpoint into a converted directory, atomically.

    Every key is checked against the architecture (on the meta device) before anything is written. The
    files go to a hidden temporary directory next to ``out_dir``, which is renamed into place at the end,
    so an interrupted conversion never leaves a half-written model behind.

    Args:
        source: ``model.ckpt``, an official-layout ``.safetensors``, or a mapping of official key -> tensor.
        config: the architecture the checkpoint holds.
        out_dir: the directory to create.
        dtype: floating dtype of the saved network weights (the schedule stays float32).
        overwrite: replace an existing ``out_dir`` (otherwise that is an error).
        progress: called before each component is written.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    stored = dtype_name(dtype)
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir} already exists", hint="pass --force to replace it, or choose --name")
    if out_dir.exists() and not is_converted_dir(out_dir):
        # --force replaces converted models only, never an unrelated folder that happens to have the name.
        raise CheckpointError(f"{out_dir} exists and is not a converted model; not replacing it")
    state_dict = read_state_dict(source) if isinstance(source, (str, Path)) else source
    plan = split_state_dict(state_dict, config)
    check_architecture(state_dict, plan, config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        names = list(COMPONENT_FILES)
        for i, name in enumerate(names, start=1):
            if progress is not None:
                progress(name, i, len(names))
            if name == SCHEDULE:
                tensors = load_schedule(state_dict, plan[SCHEDULE], config)
            else:
                tensors = {local: _cast(state_dict[official], dtype) for local, official in plan[name].items()}
            _save(tensors, tmp / COMPONENT_FILES[name], name=name)
            del tensors  # keep the peak at about one component
        meta = {**config.to_dict(), "format": FORMAT, "dtype": stored}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _match_permissions(tmp)
        _move_into_place(tmp, out_dir)
    except Exception as exc:  # a full disk: safetensors reports it as its own error type, os as OSError
        from toonctl.io.atomic import is_disk_full, output_error

        if is_disk_full(exc):
            raise output_error(out_dir, exc) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _match_permissions(directory: Path) -> None:
    """Give the weight files ``config.json``'s mode: safetensors writes them 0600, whatever the umask."""
    mode = stat.S_IMODE((directory / CONFIG_NAME).stat().st_mode)
    for name in COMPONENT_FILES.values():
        os.chmod(directory / name, mode)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` stays whole until the new one is in place."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = tmp.with_name(tmp.name + "-old")
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_architecture(
    state_dict: Mapping[str, torch.Tensor], plan: Mapping[str, Mapping[str, str]], config: ToonCrafterConfig
) -> None:
    """Raise ``CheckpointMismatchError`` unless every planned component matches ``config`` (keys and shapes).

    Builds the modules on the meta device: no memory for weights, no tensor data read.
    """
    check_components({name: build_empty(config, name) for name in plan if name != SCHEDULE}, state_dict, plan)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tensor in ``dtype`` (integer tensors keep theirs), contiguous and owning its storage."""
    out = tensor.to(dtype) if tensor.is_floating_point() else tensor
    out = out.contiguous()
    if out.untyped_storage().nbytes() != out.numel() * out.element_size():
        out = out.clone()  # a view into a larger (shared) storage: safetensors refuses those
    return out


def _save(tensors: dict[str, torch.Tensor], path: Path, *, name: str) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": FORMAT, "component": name})


# -- reading -------------------------------------------------------------------------------------------


def is_converted_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory whose ``config.json`` carries our format marker."""
    try:
        _read_meta(Path(path))
    except (CheckpointError, ConfigError):
        return False
    return True


def read_converted_config(path: str | Path) -> ToonCrafterConfig:
    """The architecture stored in a converted directory's ``config.json``."""
    meta = _read_meta(Path(path))
    try:
        return ToonCrafterConfig.from_dict(meta)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid config {Path(path) / CONFIG_NAME}: {exc}") from exc


def converted_dtype(path: str | Path) -> torch.dtype:
    """The floating dtype the network weights of a converted directory are stored in."""
    meta = _read_meta(Path(path))
    stored = meta.get("dtype")
    if stored not in SAVE_DTYPES:
        raise ConfigError(f"{Path(path) / CONFIG_NAME}: unknown dtype {stored!r}")
    return SAVE_DTYPES[stored]


def missing_files(path: str | Path) -> list[str]:
    """The component files a converted directory lacks (empty when complete)."""
    path = Path(path)
    return [f for f in COMPONENT_FILES.values() if not (path / f).is_file()]


def _read_meta(path: Path) -> dict:
    config_file = path / CONFIG_NAME
    if not path.is_dir():
        raise CheckpointError(f"not a directory: {path}")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path} is not a converted model: cannot read {CONFIG_NAME}") from exc
    except ValueError as exc:
        raise ConfigError(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f'{path} is not a converted model ({CONFIG_NAME} lacks "format": "{FORMAT}")')
    return meta


def load_converted(
    directory: str | Path,
    *,
    components: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, object]:
    """Load a converted directory into our modules, strictly.

    Args:
        directory: written by ``save_components``.
        components: subset of ``COMPONENTS`` to load (default: all).
        device: where the weights go.
        dtype: floating dtype of the network weights; None keeps the stored one. The schedule stays float32.

    Returns:
        The same shape as ``load_components``: ``{name: module}`` plus ``"schedule"``.

    Raises:
        CheckpointError: a component file is absent or unreadable.
        CheckpointMismatchError: keys missing or unexpected, or shapes that differ from ``config.json``.
    """
    directory = Path(directory)
    config = read_converted_config(directory)
    target_dtype = converted_dtype(directory) if dtype is None else dtype
    modules, files = check_converted(directory, components=components, config=config)
    loaded: dict[str, object] = {
        name: load_module(module, files[name], {k: k for k in files[name]}, device=device, dtype=target_dtype)
        for name, module in modules.items()
    }
    loaded[SCHEDULE] = load_schedule(files[SCHEDULE], {k: k for k in files[SCHEDULE]}, config)
    return loaded


def check_converted(
    directory: str | Path, *, components: Iterable[str] | None = None, config: ToonCrafterConfig | None = None
) -> tuple[dict[str, torch.nn.Module], dict[str, Mapping[str, torch.Tensor]]]:
    """Check a converted directory against its architecture without reading any tensor data.

    Modules are built on the meta device and compared with the safetensors headers. Raises one
    ``CheckpointMismatchError`` naming ``file: key`` for every missing, unexpected or wrong-shape tensor.

    Returns:
        ``({name: module on meta}, {name or "schedule": lazy file mapping})``, ready for loading.
    """
    directory = Path(directory)
    config = read_converted_config(directory) if config is None else config
    names = list(COMPONENTS if components is None else components)
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown components {unknown}; choose from {', '.join(COMPONENTS)}")
    absent = [COMPONENT_FILES[n] for n in (*names, SCHEDULE) if not (directory / COMPONENT_FILES[n]).is_file()]
    if absent:
        raise CheckpointError(
            f"{directory} is incomplete: {', '.join(absent)} missing",
            hint="convert it again (toonctl weights convert / import --force)",
        )
    files = {name: read_state_dict(directory / COMPONENT_FILES[name]) for name in (*names, SCHEDULE)}
    modules = {name: build_empty(config, name) for name in names}
    _compare(directory, modules, files)
    return modules, files


def _compare(directory: Path, modules: dict, files: dict[str, Mapping[str, torch.Tensor]]) -> None:
    missing, unexpected, mismatched = [], [], []
    for name, module in modules.items():
        label = COMPONENT_FILES[name]
        expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
        stored = set(files[name])
        missing += [f"{label}: {k}" for k in sorted(set(expected) - stored)]
        unexpected += [f"{label}: {k}" for k in sorted(stored - set(expected))]
        for key in sorted(set(expected) & stored):
            shape = _header_shape(files[name], key)
            if shape != expected[key]:
                mismatched.append(f"{label}: {key} {list(shape)} (expected {list(expected[key])})")
    extra_schedule = sorted(set(files[SCHEDULE]) - set(SCHEDULE_KEYS))
    unexpected += [f"{COMPONENT_FILES[SCHEDULE]}: {k}" for k in extra_schedule]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            f"{directory} does not match the architecture in its {CONFIG_NAME}",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            hint="convert it again from the original checkpoint",
        )


def _header_shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """A tensor's shape, from the safetensors header when the mapping can (no tensor data read)."""
    shape = getattr(state_dict, "shape", None)
    return shape(key) if callable(shape) else tuple(state_dict[key].shape)
