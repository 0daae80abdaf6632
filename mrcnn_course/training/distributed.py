"""The plumbing of distributed training: torchrun's processes, their devices, what they share.

torchrun starts one process per device and tells each its place in environment variables: WORLD_SIZE
(processes in all), RANK (this one's number; rank 0 writes the files) and LOCAL_RANK (its GPU on this
machine). On the CPU the processes talk through gloo, on GPUs through nccl.

    world, device, started_here = start_distributed()   # World(rank=0, size=1) without torchrun
    world.share(order)                                   # this process's share of a batch
    world.broadcast_from_rank_0(metrics)                 # what rank 0 computed, on every rank
    cpus_available(), cores_available()                  # the CPUs and cores this process may use, for threads

Threads: torch starts one thread per CPU of the machine (of its affinity, if set), but a JupyterHub node or
a container often allows a process less CPU time than the machine has CPUs (a control group's quota), and
threads beyond that quota wait on each other. Importing this module (the lessons, the demos, training and
the command line all do) sets torch's thread count to cpus_available(), unless OMP_NUM_THREADS chose one.
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


CGROUP_MOUNT = Path("/sys/fs/cgroup")  # where Linux mounts the control groups (v2, or one folder per v1 controller)
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")  # this process's group in each hierarchy: "id:controllers:/path"


def cpu_quota(mount: Path = CGROUP_MOUNT, membership: Path = CGROUP_MEMBERSHIP) -> float | None:
    """The CPUs' worth of time this process's control group may use (1.5: one and a half CPUs), or None when
    no quota limits it (or this is not Linux).

    cgroup v2: cpu.max holds "QUOTA PERIOD" (microseconds) or "max PERIOD"; cgroup v1: cpu.cfs_quota_us (-1:
    none) and cpu.cfs_period_us. A group's quota limits the groups below it too, so the smallest along the path
    from the process's group up to the root counts (inside a container that path is often just the root).
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy for every controller
            roots = [mount, mount / "unified"]  # "unified": the v2 part of a hybrid (v1 and v2) machine
            files: tuple[str, ...] = ("cpu.max",)
        elif "cpu" in controllers.split(","):
            roots = [mount / controllers, mount / "cpu"]
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for root in roots:
            group = root / path.lstrip("/")
            for folder in (group, *group.parents):
                quota = _quota_in(folder, files)
                if quota is not None:
                    quotas.append(quota)
                if folder == root:
                    break
    return min(quotas, default=None)


def _quota_in(folder: Path, files: tuple[str, ...]) -> float | None:
    """The quota (in CPUs) that `folder`'s files set, None if they set none or cannot be read."""
    try:
        if len(files) == 1:  # v2's cpu.max: "QUOTA PERIOD" or "max PERIOD"
            quota, period = (folder / files[0]).read_text().split()[:2]
        else:  # v1's cpu.cfs_quota_us and cpu.cfs_period_us
            quota, period = ((folder / name).read_text().strip() for name in files)
        return int(quota) / int(period) if quota not in ("max", "-1") and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def cpus_available() -> int:
    """The CPUs this process may use: those it may run on (a container or `taskset` may allow fewer than the
    machine has), and no more than its control group's quota of CPU time (cpu_quota), rounded down, at least 1.
    Rounded down: a thread beyond the quota gets a share of a CPU and holds up the threads that wait for it."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(CGROUP_MOUNT, CGROUP_MEMBERSHIP)  # read when called: tests point them at fake files
    return max(1, min(cpus, int(quota))) if quota is not None else cpus


def threads_chosen_by_user() -> bool:
    """Whether the OMP_NUM_THREADS variable chose torch's thread count (autograding's workers and
    `OMP_NUM_THREADS=1 jupyter lab` do): the course then leaves the count alone."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def use_available_cpus() -> int:
    """Set torch's thread count to cpus_available() (unless threads_chosen_by_user()) and return the count torch
    uses."""
    if not threads_chosen_by_user():
        torch.set_num_threads(cpus_available())
    return torch.get_num_threads()


def cores_available() -> int:
    """The physical cores among the CPUs this process may run on, at most cpus_available(): hyper-threads of
    one core share it, so Linux's topology counts each group of sibling CPUs once. Elsewhere every CPU counts
    as a core."""
    if not hasattr(os, "sched_getaffinity"):
        return cpus_available()
    try:
        siblings = {
            Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
            for cpu in os.sched_getaffinity(0)
        }
    except OSError:
        return cpus_available()
    return min(len(siblings), cpus_available())


use_available_cpus()  # on import: see the module's docstring
