"""Data-parallel shot batches: several processes, each on its own GPU, share one batch, through accelerate.

Started by ``accelerate launch`` (or ``torchrun``), which set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. accelerate's ``PartialState`` joins the group (nccl on GPUs, gloo on
CPUs), ``split_between_processes`` hands each process its shots, ``wait_for_everyone`` is the barrier and
``gather_object`` collects the per-shot rows so the main process prints one merged summary. Shots are dealt
round-robin by index, so every shot belongs to exactly one process (none lost, none done twice) whatever
the timing, and the long and short shots of a sorted batch spread over the processes. Without those
variables everything is one process and accelerate is not involved.
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
    """This process's membership in the batch's group (accelerate's ``PartialState``); a no-op alone."""

    def __init__(self, info: ProcessInfo) -> None:
        self.info = info
        self._state = None
        if info.distributed:
            import torch
            from accelerate import PartialState

            self._state = PartialState(cpu=not torch.cuda.is_available())

    def split(self, items: Sequence[T]) -> list[T]:
        """This process's items: ``shard(items, info)``, handed out by ``split_between_processes``."""
        if self._state is None:
            return list(items)
        n = self.info.world_size
        # accelerate splits into contiguous chunks (the first ones one longer when it does not divide);
        # the contiguous chunks of this interleaving are exactly the round-robin shares.
        interleaved = [item for rank in range(n) for item in items[rank::n]]
        with self._state.split_between_processes(interleaved) as mine:
            return list(mine)

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def gather(self, rows: list[dict]) -> list[dict]:
        """Every process's rows, concatenated in rank order (on every process)."""
        if self._state is None:
            return rows
        from accelerate.utils import gather_object

        return gather_object(rows)

    def close(self) -> None:
        if self._state is not None:
            self._state.destroy_process_group()
