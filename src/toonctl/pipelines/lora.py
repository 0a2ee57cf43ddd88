"""Merge LoRA adapter files (from ``toonctl train``) into a plain UNet at load: inference's ``--lora FILE[:SCALE]``.

An adapter file is a safetensors file with ``model.diffusion_model.<layer>.lora_A.weight`` / ``.lora_B.weight``
per adapted layer and ``format``/``rank``/``alpha`` in its header (written by
``toonctl.training.lora.save_lora_adapter``). Merging adds ``scale * alpha / rank * B @ A`` to each layer's
weight; it needs neither peft nor the training code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toonctl.convert.tooncrafter import UNET_PREFIX
from toonctl.errors import ToonctlError

FORMAT = "toonctl-lora-v1"


class LoraFileError(ToonctlError):
    """A LoRA adapter file that cannot be read or does not fit the model."""


# -- merging --------------------------------------------------------------------------------


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, shape: torch.Size) -> torch.Tensor:
    """``scaling * B @ A`` in float32, shaped like the adapted weight (Linear ``(out, in)``; Conv2d
    ``(out, in, k, k)`` from A ``(r, in, k, k)`` and B ``(out, r, 1, 1)``)."""
    a = lora_a.detach().float().flatten(1)  # (r, in * k * k)
    b = lora_b.detach().float().flatten(1)  # (out, r)
    return (scaling * (b @ a)).reshape(shape)


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of an adapter file, checked for the format and its rank/alpha."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraFileError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise LoraFileError(
            f"{path} is not a toonctl LoRA adapter (format {metadata.get('format')!r})",
            hint="adapters come from `toonctl train export` of a --lora run",
        )
    try:
        int(metadata["rank"]), float(metadata["alpha"])
    except (KeyError, ValueError) as exc:
        raise LoraFileError(f"{path}: the header lacks a valid rank/alpha ({exc})") from None
    return tensors, metadata


def merge_lora_file(unet: nn.Module, path: str | Path, scale: float = 1.0) -> int:
    """Merge the adapter file at ``path`` into ``unet``'s weights in place: ``W += scale * alpha / rank * B @ A``.

    Args:
        unet: a plain ``ToonUNet3D`` (any dtype or device).
        path: a file written by ``save_lora_adapter``.
        scale: strength; 0 leaves the weights untouched (bit for bit), 1 is the trained adapter.

    Returns:
        The number of layers merged.

    Raises:
        LoraFileError: unreadable file, or a target layer the UNet lacks or has in another shape.
    """
    tensors, metadata = read_lora_file(path)
    scaling = scale * float(metadata["alpha"]) / int(metadata["rank"])
    modules = dict(unet.named_modules())
    pairs = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
    updates = []
    for key in pairs:
        name = key.removeprefix(UNET_PREFIX)
        layer = modules.get(name)
        a, b = tensors.get(f"{key}.lora_A.weight"), tensors.get(f"{key}.lora_B.weight")
        if a is None or b is None:
            raise LoraFileError(f"{path}: {key} lacks lora_A or lora_B")
        if not key.startswith(UNET_PREFIX) or layer is None or not hasattr(layer, "weight"):
            raise LoraFileError(f"{path}: the model has no layer {key}", hint="was the adapter trained on this model?")
        expected = a.shape[1:].numel() * b.shape[0]
        if layer.weight.numel() != expected or layer.weight.shape[0] != b.shape[0]:
            raise LoraFileError(
                f"{path}: {key} does not fit the model's layer ({tuple(layer.weight.shape)})",
                hint="was the adapter trained on this model?",
            )
        updates.append((layer, a, b))
    if scale == 0:
        return len(updates)
    with torch.no_grad():
        for layer, a, b in updates:
            weight = layer.weight
            delta = lora_delta(a, b, scaling, weight.shape).to(weight.device)
            weight.copy_((weight.float() + delta).to(weight.dtype))
    return len(updates)


def merge_lora_files(unet: nn.Module, adapters: list[tuple[str | Path, float]]) -> int:
    """Merge several adapter files in order (``--lora`` given more than once); returns the layers merged.

    Every file is read and checked against the UNet before any weight changes, so a bad file leaves the model
    untouched.
    """
    for path, _ in adapters:
        _check_fits(unet, path)
    return sum(merge_lora_file(unet, path, scale) for path, scale in adapters)


def _check_fits(unet: nn.Module, path: str | Path) -> None:
    merge_lora_file(unet, path, scale=0.0)  # reads and checks everything, changes nothing
