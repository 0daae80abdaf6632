"""The plumbing of distributed training: torchrun's processes, their devices, what they share.

torchrun starts one process per device and tells each its place in environment variables: WORLD_SIZE
(processes in all), RANK (this one's number; rank 0 writes the files) and LOCAL_RANK (its GPU on this
machine). On the CPU the processes talk through gloo, on GPUs through nccl.

    world, device, started_here = start_distributed()   # World(rank=0, size=1) without torchrun
    world.share(order)                                   # this process's share of a batch
    world.broadcast_from_rank_0(metrics)                 # what rank 0 computed, on every rank
    cpus_available(), cores_available()                  # the CPUs and cores this process may use, for threads
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """The processes that train together: this one's `rank` among `size` of them. One process (no torchrun)
    is World() = rank 0 of 1, and then every method below is a plain local operation."""

    rank: int = 0
    size: int = 1

    @property
    def is_rank_0(self) -> bool:
        """The process that evaluates and writes the files."""
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items`: every size-th one, from its rank on."""
        return list(items[self.rank :: self.size])

    def broadcast_from_rank_0(self, obj):
        """Rank 0's `obj` on every rank (any picklable object; the other ranks pass None)."""
        if self.size == 1:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sum(self, tensor: Tensor) -> Tensor:
        """`tensor` summed over the processes, in place (every rank gets the sum); returns it."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor


SINGLE_PROCESS = World()  # no torchrun: rank 0 of 1


def start_distributed() -> tuple[World, torch.device, bool]:
    """(this process's World, its device, whether this call started the process group). torchrun sets
    WORLD_SIZE and LOCAL_RANK; one GPU per process if there are GPUs, else the CPU."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE_PROCESS, torch.device("cuda" if cuda else "cpu"), False
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device, started


def is_main_process() -> bool:
    """True in a single process and in rank 0 of torchrun (which sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def to_device(batch: tuple[list[Tensor], list[dict[str, Tensor]]], device: torch.device):
    """collate's (images, targets) on `device`."""
    images, targets = batch
    return [i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets]


def cpus_available() -> int:
    """The CPUs this process may run on (a container or `taskset` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_available() -> int:
    """The physical cores among cpus_available(): hyper-threads of one core share it, so Linux's topology
    counts each group of sibling CPUs once. Elsewhere every CPU counts as a core."""
    if not hasattr(os, "sched_getaffinity"):
        return cpus_available()
    try:
        siblings = {
            Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
            for cpu in os.sched_getaffinity(0)
        }
    except OSError:
        return cpus_available()
    return len(siblings)
