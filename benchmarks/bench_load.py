"""Load-to-ready time and peak RSS: toonctl's loader vs a plain ``torch.load`` + ``load_state_dict``.

Writes a full-size ToonCrafter-512 checkpoint with random weights in the official layout
(``{"state_dict": ...}``, 10.5 GB; kept in --dir for later runs), then loads it in fresh processes:

* baseline: ``torch.load`` of the whole file, every module built normally (random init), then
  ``load_state_dict`` -- what the official code does;
* toonctl: ``InterpolationPipeline.from_checkpoint`` (meta-device build, memory-mapped file, tensors
  assigned in place);
* toonctl + touch: the same, then every weight read once (the page-in a first forward pays).

    .venv/bin/python benchmarks/bench_load.py --dir /tmp/toonctl-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

BASELINE = """
import resource, time, torch
from toonctl.convert.tooncrafter import COMPONENTS, split_state_dict
from toonctl.models.configs import ToonCrafterConfig
t0 = time.perf_counter()
config = ToonCrafterConfig()
sd = torch.load(PATH, map_location="cpu", weights_only=True)["state_dict"]
plan = split_state_dict(sd, config)
for name, comp in COMPONENTS.items():
    module = comp.build(config)
    module.load_state_dict({local: sd[key] for local, key in plan[name].items()}, strict=True)
elapsed = time.perf_counter() - t0
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

TOONCTL = """
import resource, time, torch
from toonctl.pipelines.interpolate import InterpolationPipeline
t0 = time.perf_counter()
pipe = InterpolationPipeline.from_checkpoint(PATH)
elapsed = time.perf_counter() - t0
if TOUCH:
    with torch.no_grad():
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder, pipe.image_proj):
            for p in module.parameters():
                p.sum()
    elapsed = time.perf_counter() - t0
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def write_checkpoint(path: Path) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from _common import official_state_dict, random_components

    from toonctl.models.configs import ToonCrafterConfig

    print(f"writing a random full-size checkpoint to {path} ...", file=sys.stderr)
    state = official_state_dict(random_components(ToonCrafterConfig()))
    torch.save({"state_dict": state}, path)


def run(code: str, path: Path, touch: bool = False) -> tuple[float, int]:
    script = code.replace("PATH", repr(str(path))).replace("TOUCH", str(touch))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark process failed ({out.returncode}):\n{out.stderr[-2000:]}")
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/toonctl-bench"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "model.ckpt"
    if args.write_only:
        write_checkpoint(path)
        return
    if not path.exists():
        # In a child process: a child's peak RSS starts at its parent's, so the parent must stay small.
        subprocess.run([sys.executable, __file__, "--write-only", "--dir", str(args.dir)], check=True)
    rows = {
        "torch.load + load_state_dict": run(BASELINE, path),
        "toonctl from_checkpoint": run(TOONCTL, path),
        "toonctl + every weight read once": run(TOONCTL, path, touch=True),
    }
    base_s, base_rss = rows["torch.load + load_state_dict"]
    report = {
        name: {"seconds": s, "peak_rss_gib": rss / 2**30, "time_ratio": s / base_s, "rss_ratio": rss / base_rss}
        for name, (s, rss) in rows.items()
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"checkpoint: {path} ({path.stat().st_size / 2**30:.2f} GiB)")
    print(f"{'loader':<36}{'seconds':>9}{'peak RSS GiB':>14}{'x time':>8}{'x RSS':>8}")
    for name, r in report.items():
        print(f"{name:<36}{r['seconds']:>9.2f}{r['peak_rss_gib']:>14.2f}{r['time_ratio']:>8.3f}{r['rss_ratio']:>8.3f}")


if __name__ == "__main__":
    main()
