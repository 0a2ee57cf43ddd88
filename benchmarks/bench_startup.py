"""Start-up time of ``toonctl --help`` (target: under 0.5 s): the CLI must not import torch to print help."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def main(runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "toonctl", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"toonctl --help: median {statistics.median(times):.3f} s over {runs} runs (min {min(times):.3f} s)")


if __name__ == "__main__":
    main()
