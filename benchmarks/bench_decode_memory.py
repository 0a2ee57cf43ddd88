"""Peak memory and time of one decode against ``slices`` (the per-frame layers a few frames at a time).

Full-size ToonCrafter-512 VAE with random weights, fp32, on the CPU; each setting in a fresh process. Prints
the peak resident memory above what the process held before the decode, the seconds, and the largest
difference from the whole-clip decode (0 means the same frames, bit for bit).

    .venv/bin/python benchmarks/bench_decode_memory.py --size 160x256 --settings whole,4,2,1
    .venv/bin/python benchmarks/bench_decode_memory.py --size 320x512 --decoder dualref-nosplice
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def worker(size: str, frames: int, decoder_name: str, setting: str, out: Path) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from _common import init_random_

    from toonctl.convert.tooncrafter import build_empty
    from toonctl.models.configs import ToonCrafterConfig
    from toonctl.pipelines.decoders import parse_decoder

    torch.set_grad_enabled(False)
    height, width = map(int, size.split("x"))
    config = ToonCrafterConfig()
    gen = torch.Generator().manual_seed(0)
    vae = build_empty(config, "vae").to_empty(device="cpu")
    init_random_(vae, gen)
    widths = [config.vae.ch * m for m in config.vae.ch_mult]
    refs = [torch.randn(1, 2, c, height >> i, width >> i, generator=gen).transpose(1, 2) for i, c in enumerate(widths)]
    refs.append(torch.randn(1, 2, config.vae.ch, height, width, generator=gen).transpose(1, 2))
    latents = torch.randn(1, 4, frames, height // 8, width // 8, generator=gen)
    from dataclasses import replace

    decoder = parse_decoder(decoder_name)
    decoder = replace(decoder, slices=None if setting == "whole" else int(setting))
    before = _rss()
    t0 = time.perf_counter()
    video = decoder(vae, latents, refs)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save(video, out)
    gib = 2**30
    return {"setting": setting, "seconds": seconds, "peak_above_gib": (peak - before) / gib, "peak_gib": peak / gib}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="160x256")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--decoder", default="dualref")
    p.add_argument("--settings", default="whole,4,2,1", help="whole and/or frame counts")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.size, args.frames, args.decoder, args.worker, Path(args.out))))
        return
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            out = Path(tmp) / f"{setting}.pt"
            cmd = [sys.executable, __file__, "--worker", setting, "--out", str(out), "--size", args.size]
            cmd += ["--frames", str(args.frames), "--decoder", args.decoder]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                why = done.stderr.strip().splitlines()[-1:]
                print(f"{setting}: failed ({done.returncode}): {why}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["out"] = out
            rows.append(row)
            print(f"{setting} done", file=sys.stderr)
        reference = next((torch.load(r["out"]) for r in rows if r["setting"] == "whole"), None)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, {args.size} px, {args.frames} "
              f"frames, decoder {args.decoder}")  # fmt: skip
        print(f"{'images/call':<12}{'seconds':>9}{'peak above GiB':>16}{'peak RSS GiB':>14}{'max |diff|':>12}")
        for r in rows:
            diff = "-" if reference is None else f"{(torch.load(r['out']) - reference).abs().max().item():.3g}"
            print(
                f"{r['setting']:<12}{r['seconds']:>9.1f}{r['peak_above_gib']:>16.2f}{r['peak_gib']:>14.2f}{diff:>12}"
            )


if __name__ == "__main__":
    main()
