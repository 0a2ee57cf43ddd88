"""From the command's choices to a ready evaluation: checkpoints, architecture, size, engines, metric models.

Checks everything that can be checked before any work (missing files, sizes the model cannot take), so a
mistake is reported in the first second, not after an hour of generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toonctl.errors import UnsupportedSizeError, WeightsNotFoundError
from toonctl.evaluation.engines import BlendEngine, Engine, GenerationSettings, ToonctlEngine, checkpoint_labels
from toonctl.evaluation.report import EvalReport
from toonctl.evaluation.runner import EvalOptions, ProgressFn, run_evaluation
from toonctl.evaluation.scoring import MetricSuite
from toonctl.io.clips import ClipRecord


@dataclass
class EvalRun:
    """Engines, options and the metric loader of one evaluation; ``run`` does it."""

    engines: list[Engine]
    options: EvalOptions
    load_metrics: Callable[[], MetricSuite]
    skipped_engines: dict[str, str] = field(default_factory=dict)

    def run(self, clips: Sequence[ClipRecord], progress: ProgressFn | None = None) -> EvalReport:
        return run_evaluation(
            clips, self.engines, self.load_metrics, self.options, skipped_engines=self.skipped_engines,
            progress=progress,
        )  # fmt: skip


def build_run(
    engine_names: Sequence[str],
    *,
    output: Path,
    weights: Sequence[Path] = (),
    config: Path | None = None,
    clip_weights: Path | None = None,
    i3d: Path | None = None,
    lpips_dir: Path | None = None,
    rife_weights: Path | None = None,
    num_frames: int | None = None,
    frame_stride: int = 1,
    fs: int | None = None,
    size: tuple[int, int] | None = None,
    fit: str = "crop",
    steps: int = 50,
    guidance_scale: float = 7.5,
    guidance_rescale: float = 0.7,
    eta: float = 1.0,
    seed: int = 123,
    max_clips: int | None = None,
    media: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    decoder: str = "dualref",
    offload: str = "none",
    loras: Sequence[tuple[Path, float]] = (),
) -> EvalRun:
    """Resolve the choices of ``toonctl eval`` (see its help) into an ``EvalRun``.

    Raises:
        WeightsNotFoundError: a checkpoint, I3D file, CLIP checkpoint or LPIPS folder given is missing, or no
            checkpoint was found for the ``toonctl`` engine.
        UnsupportedSizeError: a size or frame count the model cannot take.
    """
    from toonctl.weights import resolve_weights

    for label, path in (("I3D file", i3d), ("CLIP checkpoint", clip_weights), ("RIFE weights", rife_weights)):
        if path is not None and not Path(path).is_file():
            raise WeightsNotFoundError(f"no {label} at {path}", hint="check the path")
    if lpips_dir is not None and not Path(lpips_dir).is_dir():
        raise WeightsNotFoundError(f"no LPIPS folder at {lpips_dir}", hint="check the path")

    checkpoints = []
    if "toonctl" in engine_names:
        checkpoints = [resolve_weights(w, config) for w in weights] if weights else [resolve_weights(None, config)]
    model_config = checkpoints[0][1] if checkpoints else _config_without_model(clip_weights, config)
    clip_reason = ""
    if clip_weights is None and checkpoints:
        clip_weights = checkpoints[0][0]
    elif clip_weights is None:
        try:
            clip_weights = resolve_weights(None, config)[0]
        except WeightsNotFoundError:
            clip_reason = "no checkpoint with the CLIP towers found; give --clip-weights model.ckpt"

    size, num_frames = _check_shape(model_config, size, num_frames, bool(checkpoints))
    settings = GenerationSettings(
        steps=steps, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, eta=eta
    )
    engines: list[Engine] = []
    skipped: dict[str, str] = {}
    for name in engine_names:
        if name == "toonctl":
            labels = checkpoint_labels([path for path, _ in checkpoints])
            for label, (path, cfg) in zip(labels, checkpoints, strict=True):
                common = dict(settings=settings, device=device, dtype=dtype, decoder=decoder, offload=offload)
                engines.append(ToonctlEngine(label, path, cfg, **common))
                # Each adapter is one more engine: this checkpoint with the adapter merged (base vs fine-tuned).
                for lora_path, scale in loras if label == labels[0] else ():
                    lora_label = f"{label}+{Path(lora_path).stem}" + ("" if scale == 1 else f"@{scale:g}")
                    engines.append(ToonctlEngine(lora_label, path, cfg, loras=((Path(lora_path), scale),), **common))
        elif name == "blend":
            engines.append(BlendEngine())
        elif name == "rife":
            from toonctl.evaluation.rife import load_rife_engine

            engine, reason = load_rife_engine(rife_weights, device=device)
            if engine is None:
                skipped["rife"] = reason
            else:
                engines.append(engine)
    options = EvalOptions(
        output=Path(output), size=size, num_frames=num_frames, frame_stride=frame_stride, fs=fs, fit=fit, seed=seed,
        max_clips=max_clips, media=media,
        header={"device": str(device), "weights": [str(path) for path, _ in checkpoints],
                "clip_weights": str(clip_weights) if clip_weights else None, "i3d": str(i3d) if i3d else None},
    )  # fmt: skip

    def load_metrics() -> MetricSuite:
        return MetricSuite.load(
            lpips_dir=lpips_dir, clip_weights=clip_weights, clip_config=_config_for_clip(clip_weights, config),
            clip_reason=clip_reason, i3d_path=i3d, device=device,
        )  # fmt: skip

    return EvalRun(engines, options, load_metrics, skipped)


def _config_without_model(clip_weights: Path | None, config: Path | None):
    from toonctl.models.configs import ToonCrafterConfig
    from toonctl.weights import config_for

    if clip_weights is not None:
        return config_for(clip_weights, config)
    if config is not None:
        from toonctl.config import load_config

        return load_config(config)
    return ToonCrafterConfig()


def _config_for_clip(clip_weights: Path | None, config: Path | None):
    if clip_weights is None:
        return None
    from toonctl.weights import config_for

    return config_for(clip_weights, config)


def _check_shape(model_config, size, num_frames, with_model: bool) -> tuple[tuple[int, int], int]:
    """The evaluation size and frame count; the model's limits apply when it is one of the engines."""
    from toonctl.io.frames import choose_size
    from toonctl.pipelines.interpolate import latent_factor, native_size

    native = native_size(model_config)
    max_frames = model_config.unet.temporal_length
    num_frames = num_frames or max_frames
    if with_model:
        size = choose_size([], size, multiple=latent_factor(model_config), native=native)
        if num_frames > max_frames:
            raise UnsupportedSizeError(f"the model makes at most {max_frames} frames, --num-frames {num_frames} asked")
    else:
        size = size or native
        if size[0] < 16 or size[1] < 16 or size[0] % 2 or size[1] % 2:
            raise UnsupportedSizeError(f"size {size[0]}x{size[1]}: sides must be even and at least 16")
    return (int(size[0]), int(size[1])), int(num_frames)
