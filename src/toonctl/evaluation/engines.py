"""The interpolators ``toonctl eval`` compares: each turns two key frames into a whole window of frames.

* ``toonctl``: the generative model (``InterpolationPipeline``), once per checkpoint given;
* ``blend``: the linear cross-fade ``frame_k = (1 - k/(T-1)) * first + k/(T-1) * last``, the floor any
  interpolator should beat;
* ``rife``: a classical flow interpolator (``toonctl.evaluation.rife``), optional.

An engine is any object with ``name``, ``fingerprint()`` (what determines its output, for the cache),
``interpolate(keys, num_frames=, prompt=, fs=, seed=)`` and ``close()``: another interpolator plugs in as
such an object, built in ``toonctl.evaluation.setup.build_run`` under a name added to ``ENGINE_NAMES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

ENGINE_NAMES = ("toonctl", "blend", "rife")


class Engine(Protocol):
    name: str

    def fingerprint(self) -> dict[str, Any]: ...

    def interpolate(self, keys: torch.Tensor, *, num_frames: int, prompt: str, fs: int, seed: int) -> torch.Tensor:
        """``keys``: ``(2, 3, H, W)`` first and last frame in [-1, 1] -> ``(num_frames, 3, H, W)`` in [-1, 1]."""
        ...

    def close(self) -> None: ...


class BlendEngine:
    """Linear cross-fade between the two key frames (no motion at all)."""

    name = "blend"

    def fingerprint(self) -> dict[str, Any]:
        return {"engine": "blend"}

    def interpolate(self, keys: torch.Tensor, *, num_frames: int, prompt: str = "", fs: int = 0, seed: int = 0):
        t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64).view(-1, 1, 1, 1)
        first, last = keys[0].double(), keys[1].double()
        return ((1 - t) * first + t * last).float()

    def close(self) -> None:
        pass


@dataclass
class GenerationSettings:
    """The sampler settings of the ``toonctl`` engine (defaults: the official ``scripts/run.sh``)."""

    steps: int = 50
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.7
    eta: float = 1.0


@dataclass
class ToonctlEngine:
    """ToonCrafter through ``InterpolationPipeline``; the model is loaded on first use and freed by ``close``."""

    name: str
    weights: Path
    config: Any
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    decoder: str = "dualref"  # the VAE decode stage (toonctl.pipelines.decoders)
    offload: str = "none"  # toonctl.pipelines.placement.OFFLOAD_MODES
    loras: tuple[tuple[Path, float], ...] = ()  # LoRA adapters merged at load, (path, scale)
    loader: Callable[[], Any] | None = None  # builds the pipeline (default: from_checkpoint)
    _pipe: Any = None

    def fingerprint(self) -> dict[str, Any]:
        stat = self.weights.stat() if self.weights.is_file() else None
        return {
            "engine": "toonctl",
            "weights": self.weights.name,
            "weights_bytes": stat.st_size if stat else None,
            "dtype": str(self.dtype).removeprefix("torch."),
            "decoder": self.decoder,
            "loras": [[path.name, path.stat().st_size, scale] for path, scale in self.loras],
            **self.settings.__dict__,
        }

    @property
    def pipeline(self):
        if self._pipe is None:
            if self.loader is not None:
                self._pipe = self.loader()
            else:
                from toonctl.pipelines.interpolate import InterpolationPipeline

                self._pipe = InterpolationPipeline.from_checkpoint(
                    self.weights, self.config, device=self.device, dtype=self.dtype, decoder=self.decoder,
                    offload=self.offload, loras=self.loras,
                )  # fmt: skip
        return self._pipe

    def interpolate(self, keys: torch.Tensor, *, num_frames: int, prompt: str, fs: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        s = self.settings
        out = self.pipeline(
            keys[0], keys[1], prompt, num_frames=num_frames, steps=s.steps, guidance_scale=s.guidance_scale,
            guidance_rescale=s.guidance_rescale, eta=s.eta, frame_stride=fs, generator=generator,
        )  # fmt: skip
        return out.video[0].transpose(0, 1).float().cpu().clamp(-1, 1)  # (T, 3, H, W)

    def close(self) -> None:
        if self._pipe is not None:
            device = self._pipe.device
            self._pipe = None
            from toonctl.device import release_memory

            release_memory(device)


def checkpoint_labels(paths: Sequence[Path]) -> list[str]:
    """Engine names for the checkpoints: ``toonctl`` for one; for more, ``toonctl:<file stem>``, or
    ``toonctl:<folder>/<file stem>`` when stems repeat (numbered when even that repeats)."""
    if len(paths) == 1:
        return ["toonctl"]
    stems = [p.stem or p.name for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{p.parent.name}/{stem}" if p.parent.name else stem for p, stem in zip(paths, stems, strict=True)]
    labels: list[str] = []
    for stem in stems:
        label = f"toonctl:{stem}"
        labels.append(label if label not in labels else f"{label}#{len(labels) + 1}")
    return labels


def parse_engine_names(text: str) -> list[str]:
    """``"toonctl,blend"`` -> the names, in order, without duplicates.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINE_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown engine {', '.join(unknown) or '(none)'}; choose from {', '.join(ENGINE_NAMES)}")
    return list(dict.fromkeys(names))
