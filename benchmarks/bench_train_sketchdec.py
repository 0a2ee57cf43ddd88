"""One optimizer step of ``toonctl train sketch-encoder`` and ``toonctl train decoder``: time and peak memory.

Each objective runs in a fresh process (so the peak RSS is its own): the objective's loss on one clip
(``compute_loss``; for the decoder also the discriminator's loss and step), backward, grad-norm clipping and
one AdamW step, as the engine does; a first step warms up, the second is timed.

* CPU (default): the tiny official-layout model of the tests (``tests/fixtures/tiny-a``) with a sketch encoder
  mirroring its UNet (ControlNet-style copy) and sketches given (no extractor in the timing); the decoder from
  the image-decoder init, the discriminator on from step 0, L1 + (1 - SSIM).
* GPU (``--device cuda --model full``): the full-size architectures with random weights, bf16 autocast.
* ``--counts``: the trainable and frozen parameter counts at full size (meta device: nothing allocated).

    .venv/bin/python benchmarks/bench_train_sketchdec.py
    .venv/bin/python benchmarks/bench_train_sketchdec.py --counts
    .venv/bin/python benchmarks/bench_train_sketchdec.py --device cuda --model full --size 320x512
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TINY = HERE.parent / "tests" / "fixtures" / "tiny-a" / "model.safetensors"
OBJECTIVES = ("sketch-encoder", "decoder")
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=("tiny", "full"), default="tiny")
    p.add_argument("--size", default="64x128", help="HxW")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--counts", action="store_true", help="full-size parameter counts (meta device)")
    p.add_argument("--objective", help=argparse.SUPPRESS)  # one objective in this process (the child)
    return p.parse_args()


def build(name: str, model: str, device):
    """The objective (its modules on ``device``) and its trained parameters."""
    import torch

    sys.path.insert(0, str(HERE))
    from toonctl.pipelines.interpolate import InterpolationPipeline

    if model == "tiny":
        pipe = InterpolationPipeline.from_checkpoint(TINY, TINY.with_name("config.yaml"), device=device)
    else:
        from _common import random_components

        from toonctl.models.configs import ToonCrafterConfig

        config = ToonCrafterConfig()
        parts = random_components(config, device=device)
        pipe = InterpolationPipeline(config=config, **parts)
    low = torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "sketch-encoder":
        from toonctl.training.sketch_objective import SketchEncoderObjective, new_sketch_encoder

        objective = SketchEncoderObjective(pipe, new_sketch_encoder(pipe.unet, device=device))
    else:
        from toonctl.training.decoder_objective import DecoderObjective, PerceptualLoss, image_decoder_init

        image_decoder_init(pipe.vae.decoder)
        perceptual = PerceptualLoss(use_lpips=False, quiet=True)
        objective = DecoderObjective(pipe.vae, perceptual=perceptual, disc_start=0)
        objective.discriminator.to(device)
    for module in objective.frozen_modules().values():
        module.to(device, low)
    return objective


def one_objective(args: argparse.Namespace) -> dict:
    import resource

    import psutil
    import torch

    sys.path.insert(0, str(HERE))
    from _common import machine_info

    from toonctl.presets import parse_size
    from toonctl.training.objective import TrainingBatch

    device = torch.device(args.device)
    torch.manual_seed(0)
    objective = build(args.objective, args.model, device)
    params = [p for m in objective.trainable_modules().values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    disc_optimizer = None
    if objective.discriminator is not None:
        disc_optimizer = torch.optim.AdamW(objective.discriminator.parameters(), lr=1e-5)
    h, w = parse_size(args.size)
    t = args.frames
    mask = torch.zeros(1, t, dtype=torch.bool)
    mask[0, t // 2 - 1] = True  # a depth-1 bisection sketch
    batch = TrainingBatch(
        video=torch.rand(1, 3, t, h, w, device=device) * 2 - 1, prompts=["a cartoon"],
        fs=torch.tensor([10], device=device), hints=(torch.rand(1, 1, t, h, w, device=device) > 0.9).float(),
        hint_mask=mask.to(device),
    )  # fmt: skip
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step(index: int) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = objective.compute_loss(batch, torch.Generator().manual_seed(0)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if disc_optimizer is not None:
            with autocast:
                d_loss = objective.discriminator_loss(batch, torch.Generator().manual_seed(1), index).loss
            d_loss.backward()
            disc_optimizer.step()
            disc_optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    loaded = psutil.Process().memory_info().rss
    step(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = step(1)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "objective": args.objective,
        "trainable": sum(p.numel() for p in params),
        "seconds": round(seconds, 3),
        "peak_gib": round(peak / GIB, 3),
        "loaded_rss_gib": round(loaded / GIB, 3),
        **machine_info(device, torch.float32 if not cuda else torch.bfloat16),
    }


def counts() -> dict:
    """Trainable / frozen parameters of both objectives at full size, built on the meta device."""
    import torch

    from toonctl.convert.tooncrafter import build_empty
    from toonctl.models.configs import ToonCrafterConfig
    from toonctl.models.sketch_encoder import SketchEncoder, SketchEncoderConfig
    from toonctl.training.discriminator import PatchDiscriminator

    def total(module) -> int:
        return sum(p.numel() for p in module.parameters())

    config = ToonCrafterConfig()
    components = {n: total(build_empty(config, n)) for n in ("unet", "vae", "text_encoder", "image_encoder")}
    components["image_proj"] = total(build_empty(config, "image_proj"))
    with torch.device("meta"):
        encoder = SketchEncoder(SketchEncoderConfig.for_unet(config.unet))
        discriminator = PatchDiscriminator()
    vae = build_empty(config, "vae")
    return {
        "sketch-encoder": {"trainable": total(encoder), "frozen": sum(components.values())},
        "decoder": {
            "trainable": total(vae.decoder),
            "discriminator": total(discriminator),
            "frozen": total(vae.encoder) + total(vae.quant_conv),
        },
    }


def main() -> None:
    args = parse_args()
    if args.counts:
        print(json.dumps(counts(), indent=2))
        return
    if args.objective:
        print(json.dumps(one_objective(args)))
        return
    sys.path.insert(0, str(HERE))
    from _common import step_table

    step_table(__file__, "objective", args.objectives.split(","), args)


if __name__ == "__main__":
    main()
