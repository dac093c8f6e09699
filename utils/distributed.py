"""torchrun / DistributedDataParallel helpers. Without torchrun (no WORLD_SIZE > 1 in the environment)
everything degrades to a single process: rank 0 of 1, no process group."""
import os
import time

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def world_info():
    """(rank, world_size, local_rank) from torchrun's environment variables."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device):
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); returns (rank, world_size)."""
    rank, world, local_rank = world_info()
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return rank, world


def cleanup():
    """Leave the process group. Drop every DDP model first. The short sleep releases the GIL so that
    gloo's worker threads can free their finished work (which takes the GIL) before the group's
    destructor waits for them; without it teardown deadlocked about one run in three."""
    if dist.is_initialized():
        time.sleep(0.1)
        dist.destroy_process_group()


def all_reduce_sum(values, device):
    """Sum a list of numbers over all processes (identity in a single process)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] (every process must call it); [obj] in a single process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if dist.is_initialized():
        dist.barrier()


def unwrap(model):
    return model.module if hasattr(model, "module") else model


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can skip the first `start`
    indices of its shard, so a run interrupted mid-epoch continues with the same example order."""

    def __init__(self, dataset, num_replicas, rank, seed, shuffle=True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_start(self, start):
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return max(0, self.num_samples - self.start)
