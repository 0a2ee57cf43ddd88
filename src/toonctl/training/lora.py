"""LoRA adapters on the UNet's spatial layers: add them (peft), save them as a small file, merge one at load.

* ``add_lora(unet, spec)`` injects peft LoRA layers into the spatial attention projections (``attn1`` and
  ``attn2``: ``to_q``, ``to_k``, ``to_v``, ``to_k_ip``, ``to_v_ip``, ``to_out.0`` of every spatial
  transformer) and, with ``spec.convs``, the spatial ResBlocks' 3x3 convolutions. Only the adapters train.
* ``save_lora_adapter(unet, path, spec)`` writes the adapter weights to a safetensors file keyed by the
  official module names (``model.diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight``) with the
  rank, alpha and format in its header.
* ``merge_lora_file(unet, path, scale)`` adds ``scale * alpha / rank * B @ A`` to each target weight of a
  plain (unwrapped) UNet: what inference's ``--lora FILE[:SCALE]`` does. Needs no peft; it lives with the
  inference code (``toonctl.pipelines.lora``) and is re-exported here.

peft is an optional dependency (the ``train`` extra): imported only when adapters are added.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from toonctl.errors import ToonctlError
from toonctl.pipelines.lora import (  # noqa: F401  (the inference half, re-exported)
    FORMAT,
    LoraFileError,
    lora_delta,
    merge_lora_file,
    merge_lora_files,
    read_lora_file,
)
from toonctl.training.trainable import UNET_PREFIX, LoraSpec

ADAPTER = "default"  # peft's adapter name
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_k_ip", "to_v_ip", "to_out.0")
RESBLOCK_CONVS = ("in_layers.2", "out_layers.3")


# -- targets ---------------------------------------------------------------------------------------------------


def lora_targets(unet: nn.Module, *, convs: bool = False) -> list[str]:
    """Names (in ``unet``) of the layers LoRA adapts: every spatial transformer's attention projections, and
    with ``convs`` the ResBlocks' two 3x3 convolutions (their temporal convolutions are never adapted)."""
    from toonctl.models.unet_blocks import ResBlock, SpatialTransformer

    modules = dict(unet.named_modules())
    targets = []
    for name, module in modules.items():
        if isinstance(module, SpatialTransformer):
            for block in range(len(module.transformer_blocks)):
                for attn in ("attn1", "attn2"):
                    for proj in ATTENTION_PROJECTIONS:
                        target = f"{name}.transformer_blocks.{block}.{attn}.{proj}"
                        if target in modules:  # to_k_ip / to_v_ip only with image cross-attention
                            targets.append(target)
        elif convs and isinstance(module, ResBlock):
            targets.extend(f"{name}.{conv}" for conv in RESBLOCK_CONVS)
    return targets


def lora_parameter_count(unet: nn.Module, spec: LoraSpec) -> int:
    """Adapter parameters ``add_lora`` would add (works on a meta-device UNet)."""
    modules = dict(unet.named_modules())
    total = 0
    for target in lora_targets(unet, convs=spec.convs):
        layer = modules[target]
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += spec.rank * (layer.in_channels * k + layer.out_channels)
        else:
            total += spec.rank * (layer.in_features + layer.out_features)
    return total


# -- training side (peft) ------------------------------------------------------------------------------------


def add_lora(unet: nn.Module, spec: LoraSpec) -> list[str]:
    """Inject LoRA layers into ``unet`` in place (peft) and make them the only trainable UNet parameters.

    Returns the adapted layer names. The UNet keeps its class and call signature; its base weights appear as
    ``<layer>.base_layer.weight`` (``trainable.official_key`` maps them back).
    """
    peft = _import_peft()
    targets = lora_targets(unet, convs=spec.convs)
    config = peft.LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets, bias="none"
    )
    unet.requires_grad_(False)
    peft.inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    for name, param in unet.named_parameters():
        param.requires_grad_(".lora_" in name)
    return targets


def _lora_layers(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(official module key, peft LoRA layer)`` of an adapted UNet."""
    for name, module in unet.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and ADAPTER in getattr(module, "lora_A", {}):
            yield UNET_PREFIX + name.replace(".base_layer", ""), module


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights keyed ``<official module key>.lora_A.weight`` / ``.lora_B.weight`` (float32, CPU)."""
    out = {}
    for key, layer in _lora_layers(unet):
        out[f"{key}.lora_A.weight"] = layer.lora_A[ADAPTER].weight.detach().float().cpu().contiguous()
        out[f"{key}.lora_B.weight"] = layer.lora_B[ADAPTER].weight.detach().float().cpu().contiguous()
    return out


def save_lora_adapter(unet: nn.Module, path: str | Path, spec: LoraSpec, *, extra: dict | None = None) -> Path:
    """Write the adapters of ``unet`` (``add_lora``) to a safetensors file, atomically.

    The header carries ``format``, ``rank``, ``alpha``, ``convs`` and the number of layers (plus ``extra``
    string pairs); tensors are keyed by the official module names.
    """
    from safetensors.torch import save_file

    from toonctl.training.export import atomic_path

    tensors = lora_state_dict(unet)
    if not tensors:
        raise LoraFileError("the UNet carries no LoRA adapters to save")
    metadata = {
        "format": FORMAT,
        "rank": str(spec.rank),
        "alpha": repr(float(spec.alpha)),
        "convs": json.dumps(spec.convs),
        "layers": str(len(tensors) // 2),
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def merged_lora_weights(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Official weight key -> base weight + adapter update (scale 1) for every adapted layer of ``unet``."""
    out = {}
    for key, layer in _lora_layers(unet):
        base = layer.base_layer.weight
        delta = lora_delta(
            layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight, layer.scaling[ADAPTER], base.shape
        )
        out[f"{key}.weight"] = (base.detach().float() + delta).to(base.dtype)
    return out


def parse_lora_option(value: str) -> tuple[Path, float]:
    """``FILE[:SCALE]`` (the ``--lora`` option) -> ``(path, scale)``; see ``toonctl.presets.parse_lora``."""
    from toonctl.presets import parse_lora

    return parse_lora(value)


def _import_peft():
    try:
        import peft
    except ImportError:
        raise ToonctlError(
            "LoRA training needs the peft package, which is not installed",
            hint="pip install 'toonctl[train]' (or pip install peft)",
        ) from None
    return peft
