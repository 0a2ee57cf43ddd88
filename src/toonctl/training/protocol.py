"""The contract between the training engine and an objective (UNet, sketch encoder, decoder).

``toonctl.training.engine`` re-exports these names: ``from toonctl.training.engine import BaseObjective``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class LossResult:
    """``loss``: the scalar to backpropagate; ``logs``: extra scalars to log (e.g. ``{"l1": 0.1}``)."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """What one kind of training optimises. See ``BaseObjective`` for the optional hooks' defaults."""

    name: str  # "unet" | "sketch-encoder" | "decoder"
    discriminator: nn.Module | None  # not None: the engine keeps a second optimizer and calls discriminator_loss

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules holding the trained parameters (those with ``requires_grad``). The engine prepares them
        (device, DDP, ...: under one root module whose forward is ``compute_loss``) and hands them back with
        ``set_module`` (FSDP may wrap them in place)."""

    def set_module(self, name: str, module: nn.Module) -> None: ...

    def frozen_modules(self) -> dict[str, nn.Module]:
        """Modules used without gradient: placed on the device (or kept on the CPU when offloaded), eval()."""

    def compute_loss(self, batch, generator: torch.Generator | None) -> LossResult:
        """The loss of a ``TrainingBatch``; every random draw from ``generator``."""

    def discriminator_loss(self, batch, generator: torch.Generator | None, step: int) -> LossResult: ...

    def export(self, destination: Path, base_weights: Path) -> Path:
        """Write the trained weights (official layout, or an adapter) to ``destination``."""


class BaseObjective:
    """Defaults of the optional parts of an objective; subclass it or implement them yourself.

    Optional hooks the engine calls when present:

    * ``default_learning_rate`` (float): used when the run gives no ``--lr``;
    * ``enable_gradient_checkpointing()``: the ``--gradient-checkpointing`` switch;
    * ``validate(step, folder) -> list[Path]``: called on the main process every ``--validation-every``
      steps with the unwrapped modules in eval mode under ``torch.no_grad``;
    * ``summary() -> str``: one line printed at the start (trainable parameter counts).
    """

    name = "objective"
    discriminator: nn.Module | None = None
    default_learning_rate = 1e-5

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {}

    def discriminator_loss(self, batch, generator: torch.Generator | None, step: int) -> LossResult:
        raise NotImplementedError(f"{self.name} has no discriminator")

    def enable_gradient_checkpointing(self) -> None:
        for module in self.trainable_modules().values():  # type: ignore[attr-defined]
            if hasattr(module, "set_gradient_checkpointing"):
                module.set_gradient_checkpointing(True)

    def validate(self, step: int, folder: Path) -> list[Path]:
        return []

    def summary(self) -> str:
        modules = self.trainable_modules()  # type: ignore[attr-defined]
        trained = sum(p.numel() for m in modules.values() for p in m.parameters() if p.requires_grad)
        total = sum(p.numel() for m in modules.values() for p in m.parameters())
        return f"{self.name}: {trained:,} trainable parameters of {total:,}"
