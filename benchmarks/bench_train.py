"""One optimizer step of ``toonctl train unet``: time and peak memory for rectify / LoRA / full, and counts.

Each mode runs in a fresh process (so the peak RSS is its own): the objective's loss on one clip
(``UNetObjective.compute_loss``, the official interpolation objective), backward, grad-norm clipping and one
AdamW step, exactly what the engine does per step; a first step warms up, the second is timed.

* CPU (default): the tiny official-layout model of the tests (``tests/fixtures/tiny-a``), 64x128, 16 frames.
* GPU (``--device cuda --model full``): the full-size ToonCrafter-512 architecture with random weights at
  320x512x16, bf16 autocast, gradient checkpointing; peak = ``torch.cuda.max_memory_allocated``.
* ``--counts``: trainable parameter counts of the 512 model per preset and for LoRA (built on the meta device:
  no weights allocated) and the GPU memory estimate of docs/performance.md.

    .venv/bin/python benchmarks/bench_train.py
    .venv/bin/python benchmarks/bench_train.py --counts
    .venv/bin/python benchmarks/bench_train.py --device cuda --model full --size 320x512
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TINY = HERE.parent / "tests" / "fixtures" / "tiny-a" / "model.safetensors"
MODES = {"rectify": {"trainable": "rectify"}, "lora": {"lora_rank": 16}, "full": {"trainable": "full"}}
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=("tiny", "full"), default="tiny")
    p.add_argument("--size", default="64x128", help="HxW")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--modes", default="rectify,lora,full")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--counts", action="store_true", help="512-model parameter counts and the memory estimate")
    p.add_argument("--mode", help=argparse.SUPPRESS)  # one mode in this process (the child)
    return p.parse_args()


# --------------------------------------------------------------------------------------------- one step


def one_mode(args: argparse.Namespace) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(HERE))
    from _common import machine_info, random_components

    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.presets import parse_size
    from toonctl.training.objective import TrainingBatch
    from toonctl.training.unet_objective import UNetObjective, UNetSettings

    device = torch.device(args.device)
    torch.manual_seed(0)
    settings = UNetSettings(weights=str(TINY), **MODES[args.mode])
    if args.model == "tiny":
        pipe = InterpolationPipeline.from_checkpoint(TINY, TINY.with_name("config.yaml"), device=device)
    else:
        from toonctl.models.configs import ToonCrafterConfig

        config = ToonCrafterConfig()
        parts = random_components(config, device=device)
        pipe = InterpolationPipeline(config=config, **parts)
    objective = UNetObjective(pipe, settings)
    for module in objective.frozen_modules().values():
        module.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.gradient_checkpointing:
        objective.enable_gradient_checkpointing()
    params = [p for m in objective.trainable_modules().values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01)
    h, w = parse_size(args.size)
    batch = TrainingBatch(
        video=torch.rand(1, 3, args.frames, h, w, device=device) * 2 - 1, prompts=["a cartoon"],
        fs=torch.tensor([10], device=device),
    )  # fmt: skip
    autocast = (
        torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = objective.compute_loss(batch, torch.Generator().manual_seed(0)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rss_loaded = _rss()
    step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = step()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024  # fmt: skip
    return {
        "mode": args.mode,
        "trainable": sum(p.numel() for p in params),
        "seconds": round(seconds, 3),
        "peak_gib": round(peak / GIB, 3),
        "loaded_rss_gib": round(rss_loaded / GIB, 3),
        **machine_info(device, torch.float32 if device.type == "cpu" else torch.bfloat16),
    }


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------------------------------- counts


def counts() -> dict:
    """Trainable parameters of the 512 model per preset and for LoRA (meta device), and the memory estimate."""
    from types import SimpleNamespace

    from toonctl.convert.tooncrafter import build_empty
    from toonctl.models.configs import ToonCrafterConfig
    from toonctl.training.lora import lora_parameter_count
    from toonctl.training.trainable import LoraSpec, apply_trainable

    config = ToonCrafterConfig()
    pipe = SimpleNamespace(unet=build_empty(config, "unet"), image_proj=build_empty(config, "image_proj"))
    totals = {name: sum(p.numel() for p in build_empty(config, name).parameters()) for name in
              ("unet", "image_proj", "vae", "text_encoder", "image_encoder")}  # fmt: skip
    result = {"components": totals, "trainable": {}}
    for preset in ("rectify", "full", "projector", "spatial"):
        result["trainable"][preset] = apply_trainable(pipe, preset).trainable_params
    result["trainable"]["lora r16"] = lora_parameter_count(pipe.unet, LoraSpec(rank=16))
    result["estimate_gib"] = {mode: memory_estimate(totals, n) for mode, n in result["trainable"].items()}
    return result


def memory_estimate(totals: dict[str, int], trainable: int, activations_gib: float = 3.0) -> dict[str, float]:
    """GiB per GPU at batch 1, bf16 autocast, gradient checkpointing: fp32 UNet + Resampler, bf16 frozen towers,
    fp32 gradients of the trained parameters, AdamW's two fp32 moments (8-bit AdamW: 2 bytes per parameter),
    and ``activations_gib`` for one 320x512x16 clip with checkpointing (a rough guess, not measured)."""
    weights = 4 * (totals["unet"] + totals["image_proj"])
    frozen = 2 * (totals["vae"] + totals["text_encoder"] + totals["image_encoder"])
    grads = 4 * trainable
    adam, adam8 = 8 * trainable, 2 * trainable
    base = (weights + frozen + grads) / GIB + activations_gib
    return {"adamw": round(base + adam / GIB, 1), "adamw8bit": round(base + adam8 / GIB, 1)}


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    if args.counts:
        print(json.dumps(counts(), indent=2))
        return
    if args.mode:
        print(json.dumps(one_mode(args)))
        return
    sys.path.insert(0, str(HERE))
    from _common import step_table

    extra = ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    step_table(__file__, "mode", args.modes.split(","), args, extra)


if __name__ == "__main__":
    main()
