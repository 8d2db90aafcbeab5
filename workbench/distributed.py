"""Several processes, one training run: PyTorch's DistributedDataParallel under `torchrun`.

    torchrun --nproc_per_node=2 -m workbench pretrain --corpus shakespeare --out runs/ddp

`torchrun` starts one process per rank and sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `init_distributed` joins them into a process group (gloo on CPU,
NCCL on GPUs). Every rank draws the same global batch from the same generator and keeps its
own slice of it, so the data is sharded per rank while the "data position" (one generator
state) is the same everywhere; DDP averages the gradients, so N ranks with batch B train
exactly like one process with batch N·B. Only rank 0 writes checkpoints and logs; every rank
resumes from the same checkpoint.

Multi-node: run the same command on every node with `--nnodes=M --node_rank=i
--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT` (see the README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar over ranks (for logging the global loss)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def rank_slice(batch: tuple[torch.Tensor, ...], info: DistInfo) -> tuple[torch.Tensor, ...]:
    """This rank's equal share of a global batch (split along dimension 0)."""
    if not info.enabled:
        return batch
    n = batch[0].size(0) // info.world_size
    return tuple(t[info.rank * n : (info.rank + 1) * n] for t in batch)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
