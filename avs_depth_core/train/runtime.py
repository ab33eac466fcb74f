"""Where a training process runs: seeding, device and AMP, DDP from torchrun's environment, data loaders and progress."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from avs_depth_core.device import resolve_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """Where this process runs: its device, its rank among the torchrun processes, and whether AMP is on."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(device: str | None = None, amp: bool = True) -> Runtime:
    """Single process, or DDP when torchrun set WORLD_SIZE > 1: nccl on CUDA (one GPU per local rank), gloo on CPU.

    AMP (fp16 autocast + GradScaler) is used only on CUDA and only when `amp` is true.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world_size > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        else:
            # The CPU cores are shared by the local processes.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world_size, local_rank, amp=bool(amp and dev.type == "cuda"))


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, runtime: Runtime, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel under torchrun, the model itself otherwise."""
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def autocast(runtime: Runtime) -> torch.autocast:
    return torch.autocast(device_type=runtime.device.type, dtype=torch.float16, enabled=runtime.amp)


def grad_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp)


# data loading and progress


class SkipFirst(Sampler[int]):
    """Drops the first `skip` indices of a sampler's epoch, so a run resumed mid-epoch sees the rest of the same order."""

    def __init__(self, sampler: DistributedSampler, skip: int = 0) -> None:
        self.sampler = sampler
        self.skip = skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def make_loader(dataset: Dataset, batch_size: int, runtime: Runtime, *, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): DistributedSampler shards it over ranks (one rank: all of it).

    Call `loader.sampler.set_epoch(epoch, skip)` before each epoch.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: no samples to load")
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=SkipFirst(sampler), num_workers=num_workers,
                      drop_last=drop_last, pin_memory=runtime.device.type == "cuda", persistent_workers=num_workers > 0)


def progress(iterable: Iterable, total: int | None, desc: str, runtime: Runtime) -> Iterable:
    """tqdm with rate and ETA on the main rank; the plain iterable elsewhere."""
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, disable=not runtime.is_main)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


