"""A one-shot run end to end (load, encoders, 4 DDIM steps, decode): the mapped weights paged in on first
use, or prefetched from a thread while the encoders run (``InterpolationPipeline.prefetch_weights``).

Full-size ToonCrafter-512 with random weights in the official layout (written once by ``bench_load.py`` into
--dir), fp32 on the CPU, 64x64 px, 16 frames, CFG 7.5; each run in a fresh process, variants interleaved.
``--cold`` drops the page cache before every run (root only), so the weights come from the disk.

    .venv/bin/python benchmarks/bench_first_call.py --dir /tmp/toonctl-bench --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

RUN = """
import resource, time, torch
t0 = time.perf_counter()
from toonctl.pipelines.interpolate import InterpolationPipeline
pipe = InterpolationPipeline.from_checkpoint(PATH)
pipe.prefetch_weights = PREFETCH
loaded = time.perf_counter()
gen = torch.Generator().manual_seed(0)
start, end = (torch.rand(3, 64, 64, generator=gen) * 2 - 1 for _ in range(2))
pipe(start, end, "a cartoon fox jumps", steps=4, generator=gen)
done = time.perf_counter()
r = resource.getrusage(resource.RUSAGE_SELF)
print(done - t0, done - loaded, r.ru_minflt, r.ru_majflt, r.ru_maxrss * 1024)
"""


def one_run(path: Path, prefetch: bool, cold: bool) -> dict[str, float]:
    if cold:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    script = RUN.replace("PATH", repr(str(path))).replace("PREFETCH", str(prefetch))
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}  # as the CLI runs
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        raise RuntimeError(f"run failed ({out.returncode}):\n{out.stderr[-2000:]}")
    total, call, minor, major, rss = (float(x) for x in out.stdout.split())
    return {"total": total, "call": call, "minor_faults": minor, "major_faults": major, "peak_gib": rss / 2**30}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/toonctl-bench"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="drop the page cache before each run (root)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    path = args.dir / "model.ckpt"
    if not path.exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(HERE / "bench_load.py"), "--write-only", "--dir", str(args.dir)], check=True
        )
    runs: dict[str, list[dict]] = {"paged in on use": [], "prefetched": []}
    for round_index in range(args.rounds):
        for name, prefetch in (("paged in on use", False), ("prefetched", True)):
            runs[name].append(one_run(path, prefetch, args.cold))
            print(f"round {round_index + 1}/{args.rounds}: {name} done", file=sys.stderr)
    table = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    if args.json:
        print(json.dumps({"runs": runs, "medians": table}, indent=1))
        return
    import torch

    cache = "cold page cache" if args.cold else "checkpoint in the page cache"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, 64x64 px, 16 frames, 4 steps; "
          f"{cache}; medians of {args.rounds} fresh processes")  # fmt: skip
    print(f"{'weights':<18}{'load->video s':>14}{'call s':>9}{'minor faults':>14}{'major faults':>14}{'peak GiB':>10}")
    for name, r in table.items():
        print(
            f"{name:<18}{r['total']:>14.2f}{r['call']:>9.2f}{r['minor_faults']:>14.0f}{r['major_faults']:>14.0f}"
            f"{r['peak_gib']:>10.2f}"
        )


if __name__ == "__main__":
    main()
