"""Data-parallel ``batch``: processes launched as by ``accelerate launch`` share the shots, none lost, none
done twice, one merged summary. Simulated with two CPU processes (gloo over loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from PIL import Image

from conftest import TINY_A
from toonctl.distributed import ProcessInfo, shard

MODEL_ARGS = [
    "--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"),
    "--device", "cpu", "--steps", "1", "--size", "32x64",
]  # fmt: skip


def test_shard_covers_every_item_once():
    items = list(range(11))
    parts = [shard(items, ProcessInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for part in parts for i in part) == items
    assert parts[0] == [0, 3, 6, 9]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_a_batch(tmp_path):
    shots, out = tmp_path / "shots", tmp_path / "out"
    for index in range(5):
        folder = shots / f"shot{index}"
        folder.mkdir(parents=True)
        for key in range(2):
            Image.new("RGB", (128, 64), (40 * index, 100 + 50 * key, 30)).save(folder / f"{key}.png")
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        command = [sys.executable, "-m", "toonctl", "batch", str(shots), "-o", str(out), "-f", "gif", "--json"]
        procs.append(
            subprocess.Popen(
                [*command, *MODEL_ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
    lines = [[json.loads(line) for line in stdout.splitlines()] for stdout, _ in outputs]
    done = [[row["shot"] for row in rows if row.get("status") == "done"] for rows in lines]
    assert sorted(done[0] + done[1]) == [f"shot{i}" for i in range(5)]  # none lost
    assert not set(done[0]) & set(done[1])  # none done twice
    assert done[0] == ["shot0", "shot2", "shot4"]
    summaries = [row for rows in lines for row in rows if row.get("summary")]
    assert len(summaries) == 1 and summaries[0]["done"] == 5  # one merged summary, from the main process
    assert sorted(p.name for p in out.iterdir()) == [f"shot{i}.gif" for i in range(5)]
