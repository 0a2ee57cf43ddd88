"""An exponential moving average of the trained weights (``--ema-decay``), saved beside each checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

EMA_FILE = "ema.safetensors"


class EMA:
    """Exponential moving average of parameters: ``shadow = decay * shadow + (1 - decay) * param``."""

    def __init__(self, parameters: Mapping[str, nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.parameters = dict(parameters)
        self.shadow = {name: p.detach().clone().float() for name, p in self.parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, param in self.parameters.items():
            self.shadow[name].lerp_(param.detach().float(), 1 - self.decay)

    def save(self, folder: Path) -> Path:
        """``folder/ema.safetensors``: the averages keyed ``<module>.<parameter>``."""
        from safetensors.torch import save_file

        path = Path(folder) / EMA_FILE
        save_file({k: v.detach().cpu().contiguous() for k, v in self.shadow.items()}, str(path))
        return path

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        for name, value in load_file(str(Path(folder) / EMA_FILE)).items():
            self.shadow[name].copy_(value)
