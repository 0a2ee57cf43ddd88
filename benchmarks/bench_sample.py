"""Per-stage time, FLOPs and peak memory of one interpolation with the full-size ToonCrafter-512 model.

Random weights (nothing to download), built in memory. On a GPU the defaults are the real job
(320x512, 16 frames, 50 steps, bf16); on the CPU a reduced resolution and a few steps finish in minutes.

    .venv/bin/python benchmarks/bench_sample.py                       # CPU: 64x64, 2 steps, fp32
    .venv/bin/python benchmarks/bench_sample.py --device cuda --dtype bf16 --offload model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    FLOOR_TFLOP_PER_SAMPLE,
    Timer,
    machine_info,
    random_components,
    synchronize,
)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from toonctl.device import resolve_device, resolve_dtype  # noqa: E402
from toonctl.models.attention import set_attention_backend  # noqa: E402
from toonctl.models.configs import ToonCrafterConfig  # noqa: E402
from toonctl.peak_memory import PeakMemory  # noqa: E402
from toonctl.pipelines.interpolate import InterpolationNoise, InterpolationPipeline  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--size", default=None, help="HxW (default: 320x512 on GPU, 64x64 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: 50 on GPU, 2 on CPU)")
    p.add_argument("--attention", default="auto")
    p.add_argument("--offload", default="none", choices=["none", "model", "sequential"])
    p.add_argument("--two-call-guidance", action="store_true", help="the official cond/uncond in two UNet calls")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (first step includes warm-up)")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    set_attention_backend(args.attention)
    on_gpu = device.type == "cuda"
    height, width = map(int, (args.size or ("320x512" if on_gpu else "64x64")).split("x"))
    steps = args.steps or (50 if on_gpu else 2)
    config = ToonCrafterConfig()
    frames = config.unet.temporal_length

    load_device = device if args.offload == "none" else torch.device("cpu")
    pipe = InterpolationPipeline(config=config, **random_components(config, load_device, dtype))
    if args.offload != "none":
        pipe.set_placement(device, offload=args.offload)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet)
    gen = torch.Generator().manual_seed(0)
    start, end = (torch.rand(3, height, width, generator=gen) * 2 - 1 for _ in range(2))
    noise = InterpolationNoise.draw(
        num_frames=frames, latent_hw=(height // 8, width // 8), num_steps=steps, generator=gen
    )
    timer = Timer(device)
    stages: dict[str, dict] = {}

    def stage(name: str, fn, flops_fn=None):
        with PeakMemory(device) as memory, timer() as elapsed:
            result = fn()
        flops = count_flops(flops_fn or fn) if not args.compile else float("nan")
        stages[name] = {"seconds": elapsed[0], "tflop": flops / 1e12, "peak_gib": (memory.peak or 0) / 2**30}
        return result

    # Stages one by one, as the pipeline runs them.
    prompt = "a cartoon fox jumps"
    stage("text", lambda: pipe.encode_text([prompt, ""]))
    stage("image", lambda: pipe.encode_image(torch.stack([start, torch.zeros_like(start)])))
    stage("encode", lambda: pipe.encode_keyframes(torch.stack([start, end])))
    conditions = pipe.prepare_conditions(start, end, prompt)
    ref = [h.unsqueeze(0).transpose(1, 2) for h in conditions.keyframes.hidden_states]
    step_times: list[float] = []

    def on_step(info: dict) -> None:
        synchronize(device)
        step_times.append(time.perf_counter())

    def sample(num_steps: int, callback=None):
        step_noise = InterpolationNoise(noise.posterior, noise.x_T, noise.steps[:num_steps])
        return pipe(
            start, end, prompt, steps=num_steps, noise=step_noise, conditions=conditions,
            batched_guidance=not args.two_call_guidance, callback=callback,
        )  # fmt: skip

    with PeakMemory(device) as memory, timer() as total:
        step_times.append(time.perf_counter())
        out = sample(steps, on_step)
    total_peak = memory.peak or 0
    per_step = [b - a for a, b in zip(step_times, step_times[1:], strict=False)]
    stage("decode", lambda: pipe.decode_latents(out.latents, ref, splice=True))
    unet_tflop = float("nan")
    if not args.compile:  # one guided step + decode, minus the decode
        unet_tflop = count_flops(lambda: sample(1)) / 1e12 - stages["decode"]["tflop"]
    encoders = sum(stages[s]["tflop"] for s in ("text", "image", "encode"))
    report = {
        **machine_info(device, dtype),
        "size": f"{height}x{width}",
        "frames": frames,
        "steps": steps,
        "attention": args.attention,
        "offload": args.offload,
        "guidance": "two calls" if args.two_call_guidance else "batched",
        "stages": stages,
        "unet_step_seconds": per_step,
        "unet_step_tflop": unet_tflop,
        "total_seconds": total[0],
        "total_peak_gib": total_peak / 2**30,
    }
    report["unet_tflops_achieved"] = unet_tflop / (sorted(per_step)[len(per_step) // 2]) if per_step else None
    total_tflop = encoders + steps * unet_tflop + stages["decode"]["tflop"]
    report["sample_tflop"] = total_tflop
    report["floor_note"] = (
        f"one official 50-step 320x512 sample = {FLOOR_TFLOP_PER_SAMPLE:.0f} TFLOP; this run = {total_tflop:.2f} TFLOP"
    )
    if args.json:
        print(json.dumps(report, indent=1))
        return
    head = f"{report['device']} | {report['dtype']} | torch {report['torch']} | {report['size']}x{frames} frames"
    print(f"{head}, {steps} steps, {report['guidance']} guidance, attention {args.attention}, offload {args.offload}")
    print(f"{'stage':<10}{'seconds':>10}{'TFLOP':>10}{'TFLOP/s':>10}{'peak GiB':>10}")
    for name, s in stages.items():
        rate = s["tflop"] / s["seconds"] if s["seconds"] else 0.0
        print(f"{name:<10}{s['seconds']:>10.3f}{s['tflop']:>10.3f}{rate:>10.3f}{s['peak_gib']:>10.2f}")
    median = sorted(per_step)[len(per_step) // 2] if per_step else float("nan")
    rate = unet_tflop / median
    note = f"(median of {len(per_step)}; first {per_step[0]:.3f} s)"
    print(f"{'unet step':<10}{median:>10.3f}{unet_tflop:>10.3f}{rate:>10.3f}   {note}")
    print(f"sampling + decode: {total[0]:.2f} s, peak {report['total_peak_gib']:.2f} GiB; {report['floor_note']}")


if __name__ == "__main__":
    main()
