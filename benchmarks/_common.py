"""Helpers shared by the benchmark scripts: random full-size weights, timing, machine facts (peak memory:
``toonctl.peak_memory.PeakMemory``)."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from toonctl.convert.tooncrafter import COMPONENTS, build_empty
from toonctl.models.configs import ToonCrafterConfig
from toonctl.samplers.schedules import make_schedule_buffers

# One 50-step 320x512x16 sample of the official model (golden README, torch's flop counter).
FLOOR_TFLOP_PER_SAMPLE = 1343.0


def init_random_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Fill a module in place: matrices ~ N(0, 1/fan_in), norm weights 1, other vectors 0.

    Activations stay O(1) through the deep networks, so timings are not distorted by denormals or NaNs.
    """
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                param.normal_(0.0, fan_in**-0.5, generator=generator)
            elif name.endswith("weight") or name.endswith("mix_factor"):
                param.fill_(1.0)
            else:
                param.zero_()


def random_components(
    config: ToonCrafterConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, object]:
    """Every component with random weights (built on meta, materialised once: no second copy)."""
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, object] = {}
    for name in COMPONENTS:
        module = build_empty(config, name).to_empty(device="cpu")
        init_random_(module, generator)
        parts[name] = module.to(device=device, dtype=dtype)
    parts["schedule"] = make_schedule_buffers(config.diffusion)
    return parts


def official_state_dict(parts: dict[str, object]) -> dict[str, torch.Tensor]:
    """The components' tensors under the official checkpoint names (what ``model.ckpt`` holds)."""
    state = {}
    for name, comp in COMPONENTS.items():
        state.update({comp.prefix + k: v for k, v in parts[name].state_dict().items()})
    state.update(parts["schedule"])
    return state


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
        model = Path("/proc/cpuinfo")
        if model.exists():
            for line in model.read_text().splitlines():
                if line.startswith("model name"):
                    name = f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
                    break
    return {"device": name, "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__}


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    @contextmanager
    def __call__(self) -> Iterator[list[float]]:
        synchronize(self.device)
        result = [0.0]
        start = time.perf_counter()
        yield result
        synchronize(self.device)
        result[0] = time.perf_counter() - start


def step_table(script: str, flag: str, names: list[str], args, extra: list[str] = ()) -> None:
    """Run ``script --<flag> NAME ...`` once per name in a fresh process (its peak RSS is its own) and print
    the rows as a Markdown table: name, trainable parameters, seconds per step, peak GiB."""
    import json
    import subprocess
    import sys

    rows = []
    for name in names:
        command = [sys.executable, script, f"--{flag}", name, "--device", args.device, "--model", args.model,
                   "--size", args.size, "--frames", str(args.frames), *extra]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{rows[0]['device']}, torch {rows[0]['torch']}, {args.model} model, {args.size}x{args.frames}")
    print(f"| {flag} | trainable params | seconds / step | peak GiB |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row[flag]} | {row['trainable']:,} | {row['seconds']:.2f} | {row['peak_gib']:.2f} |")
