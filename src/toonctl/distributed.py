"""Data-parallel shot batches: several processes, each on its own GPU, share one batch.

Started by ``accelerate launch`` (or ``torchrun``), which set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. Shots are dealt round-robin by index, so every shot belongs to
exactly one process (none lost, none done twice) whatever the timing; the per-shot rows are gathered
so the main process prints one merged summary. Without those variables everything is one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str) -> str:
        """With several processes, ``auto`` means this process's own GPU (``cuda:LOCAL_RANK``) when there is one."""
        if not self.distributed or requested != "auto":
            return requested
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


def process_info() -> ProcessInfo:
    """This process's place in a launched group (from the launcher's environment variables)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessInfo()
    return ProcessInfo(
        rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def shard(items: Sequence[T], info: ProcessInfo) -> list[T]:
    """The items this process handles: every ``world_size``-th, starting at its rank."""
    return list(items[info.rank :: info.world_size])


class ProcessGroup:
    """A ``torch.distributed`` group for the batch (gloo: it only carries small Python objects)."""

    def __init__(self, info: ProcessInfo) -> None:
        self.info = info
        if info.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)

    def barrier(self) -> None:
        if self.info.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, rows: list[dict]) -> list[dict]:
        """Every process's rows, concatenated in rank order (on every process)."""
        if not self.info.distributed:
            return rows
        import torch.distributed as dist

        gathered: list[list[dict] | None] = [None] * self.info.world_size
        dist.all_gather_object(gathered, rows)
        return [row for part in gathered for row in (part or [])]

    def close(self) -> None:
        if self.info.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
