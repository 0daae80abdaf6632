"""The plumbing of distributed training: torchrun's processes, their devices, what they share.

torchrun starts one process per device and tells each its place in environment variables: WORLD_SIZE
(processes in all), RANK (this one's number; rank 0 writes the files) and LOCAL_RANK (its GPU on this
machine). On the CPU the processes talk through gloo, on GPUs through nccl.
"""

import os

import torch
import torch.distributed as dist
from torch import Tensor


def start_distributed() -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call started the process group). torchrun sets WORLD_SIZE
    and LOCAL_RANK; one GPU per process if there are GPUs, else the CPU."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu"), False
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started


def is_main_process() -> bool:
    """True in a single process and in rank 0 of torchrun (which sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def broadcast_from_rank_0(obj, world: int):
    """Rank 0's `obj` on every rank (any picklable object; the other ranks pass None)."""
    if world == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def to_device(batch: tuple[list[Tensor], list[dict[str, Tensor]]], device: torch.device):
    """collate's (images, targets) on `device`."""
    images, targets = batch
    return [i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets]
