"""Distributed set-up for the v1 trainer: joining the torchrun process group, agreeing across ranks, a sampler
that resumes mid-epoch, and the replica checksum. With one process every helper is a plain local value."""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from ..fileio import update_digest

PROCESS_GROUP_TIMEOUT = _dt.timedelta(hours=3)  # rank 0 builds the latent cache while the others wait at a barrier


@dataclass(frozen=True)
class Dist:
    """Process-group facts: rank, world size, device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that logs, plots, saves and exports)."""
        return self.rank == 0

    def max_over_ranks(self, value: float) -> float:
        """The largest `value` over all ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (a stop on one rank stops all, so none waits at a collective)."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order."""
        if self.world == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group together: a rank leaving early can abort the other's gloo threads."""
        if self.world > 1:
            self.barrier()
            dist.destroy_process_group()


def init_distributed() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda") if cuda else torch.device("cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return Dist(dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}") if cuda else torch.device("cpu"))


class ResumableSampler(Sampler[int]):
    """A DistributedSampler's order for one epoch, skipping the samples already consumed (exact resume)."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base = base
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        """Iterate epoch `epoch`'s permutation from sample `skip` on."""
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip


def state_checksum(module: nn.Module) -> str:
    """sha256 over every tensor of a state dict (replica comparison)."""
    h = hashlib.sha256()
    update_digest(h, module.state_dict().items())
    return h.hexdigest()
