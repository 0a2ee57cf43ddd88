"""Write trained weights back into a full checkpoint in the official layout.

The output has exactly the base checkpoint's keys, shapes and dtypes (``LatentVisualDiffusion.state_dict()``
as the official trainer saves it), with the trained tensors replaced, so the official loader
(``load_model_checkpoint``, strict) and ``InterpolationPipeline.from_checkpoint`` both load it. ``.safetensors``
or ``.ckpt`` (``{"state_dict": ...}``, the official form), written under a temporary name and renamed into
place: an interrupted export never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from toonctl.errors import CheckpointError, CheckpointMismatchError, OutputError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")


def export_checkpoint(
    base_weights: str | Path,
    replacements: Mapping[str, torch.Tensor],
    out: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A copy of ``base_weights`` with ``replacements`` swapped in, written atomically to ``out``.

    Args:
        base_weights: the official-layout checkpoint trained from (``model.ckpt`` or ``.safetensors``).
        replacements: official key -> trained tensor; each key must exist in the base with the same shape.
            Tensors are cast to the base tensor's dtype, so the output is key for key, dtype for dtype the base.
        out: ``.safetensors`` or ``.ckpt`` / ``.pt`` / ``.pth``.
        metadata: extra string pairs stored in a safetensors header (ignored for ``.ckpt``).

    Returns:
        ``out`` as a ``Path``.

    Raises:
        CheckpointError: the base cannot be read or is a converted directory.
        CheckpointMismatchError: a replacement key is not in the base, or has another shape.
        OutputError: an unsupported suffix, or ``out`` is the base file itself.
    """
    from toonctl.checkpoint import read_state_dict

    base_weights, out = Path(base_weights), Path(out)
    suffix = out.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise OutputError(
            f"cannot export to {out.name}: unsupported suffix {out.suffix or '(none)'}",
            hint="use .safetensors or .ckpt",
        )
    if base_weights.is_dir():
        raise CheckpointError(
            f"{base_weights} is a converted directory, not an official-layout checkpoint",
            hint="export from the model.ckpt (or official-layout .safetensors) the run was trained from",
        )
    if out.exists() and base_weights.exists() and out.resolve() == base_weights.resolve():
        raise OutputError(f"refusing to overwrite the base checkpoint {base_weights}", hint="choose another -o")
    base = read_state_dict(base_weights)
    state_dict = _merged_state_dict(base, replacements)
    with atomic_path(out) as tmp:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            save_file(state_dict, str(tmp), metadata={"format": "pt", **dict(metadata or {})})
        else:
            torch.save({"state_dict": state_dict}, tmp)
    return out


def _merged_state_dict(base: Mapping[str, torch.Tensor], replacements: Mapping[str, torch.Tensor]) -> dict:
    base_keys = set(base)  # (a lazy safetensors view has no cheap membership test)
    unknown = sorted(k for k in replacements if k not in base_keys)
    if unknown:
        raise CheckpointMismatchError("trained tensors missing from the base checkpoint", unexpected=unknown)
    state_dict: dict[str, torch.Tensor] = {}
    mismatched = []
    for key in base:
        tensor = base[key]
        if key in replacements:
            new = replacements[key].detach()
            if tuple(new.shape) != tuple(tensor.shape):
                mismatched.append(f"{key} {tuple(new.shape)} vs {tuple(tensor.shape)}")
                continue
            tensor = new.to("cpu", tensor.dtype)
        state_dict[key] = tensor.contiguous()
    if mismatched:
        raise CheckpointMismatchError(
            "trained tensors differ in shape from the base checkpoint", mismatched=mismatched
        )
    return state_dict


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; rename it onto ``path`` when the block succeeds, delete it
    when it fails (or is interrupted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def trained_replacements(pipe, *, only_trainable: bool = False) -> dict[str, torch.Tensor]:
    """Official key -> tensor of the UNet and the Resampler, ready for ``export_checkpoint``.

    A LoRA-adapted UNet contributes its base weights with the adapters merged in (scale 1); adapter tensors
    themselves have no official key and are left out.

    Args:
        pipe: the trained pipeline (``unet`` / ``image_proj`` may be wrapped by DDP or carry peft adapters).
        only_trainable: only the parameters with ``requires_grad`` (plus merged LoRA layers).
    """
    from toonctl.training.lora import merged_lora_weights
    from toonctl.training.trainable import iter_parameters, unwrap_module

    merged = merged_lora_weights(unwrap_module(pipe.unet))
    out = {}
    for key, group, param in iter_parameters(pipe):
        if group == "lora" or (only_trainable and not param.requires_grad and key not in merged):
            continue
        out[key] = merged.get(key, param).detach()
    return out
