"""Throughput of ``toonctl dataset build`` on a synthetic episode: seconds of work per minute of footage.

The episode (written once under a temporary folder) has flat coloured scenes with hard cuts every
``--shot`` seconds: striped backdrops panning under a moving disc, every third scene held still (the static
filter drops it). Run: ``PYTHONPATH=src python benchmarks/bench_dataset.py --size 640x360 --minutes 1``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_episode(path: Path, width: int, height: int, fps: float, seconds: float, shot: float) -> None:
    import imageio_ffmpeg

    colours = [(200, 40, 40), (40, 170, 60), (40, 60, 200), (220, 200, 60), (160, 60, 180)]
    ys, xs = np.mgrid[0:height, 0:width]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1,
                                         output_params=["-crf", "18"], ffmpeg_log_level="error")  # fmt: skip
    writer.send(None)
    per_shot = round(shot * fps)
    for index in range(round(seconds * fps)):
        scene, step = divmod(index, per_shot)
        step = 0 if scene % 3 == 2 else step  # every third scene is still
        colour = np.array(colours[scene % len(colours)], np.uint8)
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = colour
        stripes = ((xs + ys + 2 * step) // (height // 8)) % 2 == 0
        frame[stripes] = (colour * 0.85).astype(np.uint8)
        disc = (xs - width // 8 - step * width // (2 * per_shot)) ** 2 + (ys - height // 2) ** 2 < (height // 8) ** 2
        frame[disc] = 250
        writer.send(frame)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360", help="WxH of the episode")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--shot", type=float, default=3.0, help="seconds between cuts")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    from toonctl.dataset.build import build_dataset
    from toonctl.dataset.settings import BuildSettings

    with tempfile.TemporaryDirectory(prefix="toonctl-bench-dataset-") as folder:
        folder = Path(folder)
        episodes = folder / "episodes"
        episodes.mkdir()
        count = max(1, args.workers)
        minutes = args.minutes / count
        write_episode(episodes / "ep0.mp4", width, height, args.fps, minutes * 60, args.shot)
        for i in range(1, count):  # the same episode under other names: one per worker
            os.link(episodes / "ep0.mp4", episodes / f"ep{i}.mp4")
        for copy in (True, False):
            root = folder / f"data-{copy}"
            start = time.perf_counter()
            result = build_dataset([episodes], root, BuildSettings(copy=copy), workers=args.workers)
            seconds = time.perf_counter() - start
            footage = minutes * count
            print(
                f"{args.size} {args.fps:g} fps, {footage:g} min of footage, workers {args.workers},"
                f" {'clip files' if copy else '--reference'}: {seconds:.1f} s"
                f" ({seconds / footage:.1f} s per minute, {footage * 60 / seconds:.2f}x real time);"
                f" {result.summary['kept']} of {result.summary['clips']} clips kept"
            )


if __name__ == "__main__":
    main()
