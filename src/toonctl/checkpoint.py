"""Reading checkpoint files and loading them, strictly, into modules built on the meta device.

Knows files and keys (the official checkpoint's key prefixes included), not architectures:
``read_state_dict`` opens ``torch.save`` files (tensors only, ``weights_only=True``, memory-mapped) and
safetensors (one tensor at a time); ``check_modules`` compares a module's keys and shapes with a file's without
reading tensor data; ``load_module`` assigns each tensor straight to its device and dtype, so the weights are
never held twice. The converters (``toonctl.convert``) and the loaders of the sketch and CLIP-scoring networks
(``models/``) build on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from toonctl.errors import CheckpointError, CheckpointMismatchError

# Where each network sits in the official checkpoint (``LatentVisualDiffusion.state_dict()``).
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
IMAGE_EMBEDDER_PREFIX = "embedder.model."
IMAGE_PROJ_PREFIX = "image_proj_model."


class _SafetensorsDict(Mapping):
    """A read-on-demand view of a safetensors file (one tensor in memory at a time)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self._key_set = set(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:  # Mapping's default reads the tensor and expects a KeyError
        return key in self._key_set

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


def read_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Open an official-layout checkpoint (``.ckpt``/``.pt``/``.pth`` or ``.safetensors``).

    Returns a mapping of official key -> tensor. ``.ckpt`` files are memory-mapped and
    ``.safetensors`` files are read tensor by tensor, so nothing is loaded twice.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return _SafetensorsDict(path)
        except Exception as exc:  # SafetensorError: truncated header, bad JSON, ...
            raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    try:
        obj = _torch_load(path)
    except Exception as exc:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        raise _load_error(path, exc) from exc
    return _unwrap(obj, path)


def _load_error(path: Path, exc: Exception) -> CheckpointError:
    """One line in our words for a failed ``torch.load``: never torch's advice to load unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return CheckpointError(
            f"cannot read {path}: it holds a pickled Python object ({refused.group(1)}), not only tensors;"
            " toonctl loads tensors only and never runs code from a checkpoint",
            hint="save just the model's state_dict (tensors) with the tool that made it, or use a .safetensors file",
        )
    if "legacy .tar format" in text:  # torch's guess for bytes it does not recognise (also a file of zeros)
        return CheckpointError(
            f"cannot read {path}: it is truncated, corrupt or not a PyTorch checkpoint (unrecognised format)",
            hint="re-download it (toonctl weights fetch) or check the path",
        )
    if "WeightsUnpickler" in text:  # e.g. "Unsupported operand 149": a plain pickle.dump, not torch.save
        return CheckpointError(
            f"cannot read {path}: not a tensors-only PyTorch checkpoint ({_load_failure(exc)})",
            hint="toonctl loads tensors only: save the state_dict with torch.save, or use a .safetensors file",
        )
    return CheckpointError(
        f"cannot read {path}: it is truncated, corrupt or not a PyTorch checkpoint ({_load_failure(exc)})",
        hint="re-download it (toonctl weights fetch) or check the path",
    )


def _load_failure(exc: Exception) -> str:
    """The useful part of a ``torch.load`` failure.

    A refused weights-only load carries a page of advice (including re-running with ``weights_only=False``,
    which toonctl never does); what went wrong is the text after ``WeightsUnpickler error:``.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        detail = detail.split(" Please use ")[0].strip()
        return f"refused by the tensors-only loader: {detail}" if detail else "refused by the tensors-only loader"
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _torch_load(path: Path) -> object:
    """``torch.load`` restricted to tensors and containers; memory-mapped when the file allows it.

    torch's warning about an unusual pickle protocol (two lines on stderr before our own error) is silenced.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # only the pre-1.6 (non-zip) format cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "module" in obj and isinstance(obj["module"], dict):
        # deepspeed: keys carry a "_forward_module." prefix, which the official loader strips.
        obj = {k.removeprefix("_forward_module."): v for k, v in obj["module"].items()}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def find_mismatches(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], keys: Mapping[str, str], *, prefix: str = ""
) -> tuple[list[str], list[str], list[str]]:
    """Compare ``keys`` (local -> file key) with ``module``'s state dict: (missing, unexpected, wrong shape).

    Missing keys are named as the file would name them: ``prefix`` + the module's key.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    missing = [prefix + k for k in sorted(set(expected) - set(keys))]
    unexpected = [keys[k] for k in sorted(set(keys) - set(expected))]
    mismatched = []
    for local in sorted(set(expected) & set(keys)):
        shape = _shape_of(state_dict, keys[local])
        if shape != expected[local]:
            mismatched.append(f"{keys[local]} {list(shape)} (expected {list(expected[local])})")
    return missing, unexpected, mismatched


def strip_shared_prefix(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """``{key less prefix: key}`` when every key starts with ``prefix`` (a wrapper's name), else ``{key: key}``."""
    keys = list(keys)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix) :]: k for k in keys}
    return {k: k for k in keys}


def build_checked(
    name: str,
    build: Callable[[], nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    keys: Mapping[str, str],
    *,
    message: str,
    hint: str,
) -> nn.Module:
    """``build()`` on the meta device, checked against ``state_dict`` under ``keys`` (see ``check_modules``)."""
    with torch.device("meta"):
        module = build()
    check_modules({name: module}, state_dict, {name: keys}, message=message, hint=hint)
    return module


def check_modules(
    modules: Mapping[str, nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    plan: Mapping[str, Mapping[str, str]],
    *,
    prefixes: Mapping[str, str] | None = None,
    message: str | None = None,
    hint: str = "check that --config describes this checkpoint",
) -> None:
    """Raise one ``CheckpointMismatchError`` naming every missing, unexpected or wrong-shape key of ``modules``
    (built on meta) against ``plan`` (``{name: {local key: checkpoint key}}``); no tensor data is read.
    ``prefixes``: each module's key prefix in the file, for naming missing keys."""
    missing, unexpected, mismatched = [], [], []
    for name, module in modules.items():
        m, u, w = find_mismatches(module, state_dict, plan[name], prefix=(prefixes or {}).get(name, ""))
        missing += m
        unexpected += u
        mismatched += w
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            message or f"the checkpoint does not match the architecture of the config ({', '.join(modules)})",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            hint=hint,
        )


def load_module(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    keys: Mapping[str, str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load ``state_dict[keys[local]]`` into ``module`` (built on meta), tensor by tensor, strictly.

    Each tensor goes straight to ``device`` and ``dtype`` (integer tensors keep theirs).
    """
    tensors = {}
    for local, official in keys.items():
        tensor = state_dict[official]
        target_dtype = dtype if tensor.is_floating_point() else tensor.dtype
        tensors[local] = tensor.to(device=device, dtype=target_dtype)
    module.load_state_dict(tensors, strict=True, assign=True)
    _check_no_meta_tensors(module)
    return module


def _shape_of(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if hasattr(state_dict, "shape"):  # read-on-demand mappings give shapes without loading the tensor
        return state_dict.shape(key)
    return tuple(state_dict[key].shape)


def _check_no_meta_tensors(module: nn.Module) -> None:
    """Non-persistent buffers are not in checkpoints: a module built on meta must not have any."""
    for name, buf in module.named_buffers():
        if buf.is_meta:
            raise RuntimeError(f"buffer {name} of {type(module).__name__} is still on the meta device after loading")
