"""Several processes, one training run: PyTorch's DDP or FSDP2 under `torchrun`.

    torchrun --nproc_per_node=2 -m workbench pretrain --corpus shakespeare --out runs/ddp
    torchrun --nproc_per_node=2 -m workbench pretrain --parallel fsdp --out runs/fsdp

`torchrun` starts one process per rank and sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `init_distributed` joins them into a process group (gloo on CPU,
NCCL on GPUs). Every rank draws the same global batch from the same generator and keeps its
own slice of it, so the data is sharded per rank while the "data position" (one generator
state) is the same everywhere. Only rank 0 writes checkpoints and logs; every rank resumes
from the same checkpoint.

How the ranks share the model (`TrainConfig.parallel`):

- "ddp" (default): DistributedDataParallel. Every rank holds the whole model and optimizer;
  gradients are averaged during backward, so N ranks with batch B train exactly like one
  process with batch N·B.
- "fsdp": FSDP2 (`torch.distributed.fsdp.fully_shard`), for models that do not fit one device.
  Every parameter, gradient and optimizer moment is split along dimension 0 across the ranks
  (`shard_model`); each transformer block is gathered just before its forward/backward and
  freed after. The arithmetic is DDP's (gradients are averaged by reduce-scatter), so the loss
  curve matches DDP and a single process up to float rounding. Checkpoints stay in the
  single-process format: every rank takes part in gathering the full weights and optimizer
  state (`gather_model_state`, `gather_optimizer_state`) and rank 0 writes them, so an FSDP
  checkpoint loads in one process and a single-process checkpoint resumes under FSDP.
  With one process (no torchrun) "fsdp" has nothing to shard across: the Trainer logs a
  one-line warning and trains the plain model.

Multi-node: run the same command on every node with `--nnodes=M --node_rank=i
--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT` (see the README).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


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
    """Join the process group torchrun describes in the environment; a single process otherwise.

    Called once by the entry point (the command line), which also calls `shutdown` at the end,
    as nanoGPT's train.py does; library code asks `dist_info()`.
    """
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


def dist_info() -> DistInfo:
    """The process group this process has joined (`init_distributed`), or a single process.

    Raises a ValueError when torchrun started several ranks but no group was joined: each rank
    would otherwise train alone and write the same files.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        raise ValueError(f"WORLD_SIZE={world_size} (torchrun) but no process group was joined; call "
                         "workbench.distributed.init_distributed(device_type) first, as `python -m workbench` does")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


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


# ----------------------------------------------------------------------- FSDP
# The FSDP and distributed-checkpoint modules are imported inside these functions: they add
# over half a second to `import workbench`, and only an FSDP run needs them.


def _gather_options():
    """Gathered state is whole (not sharded) and on the CPU, and only rank 0 receives it: the
    others get {} and so never hold a full copy of a model that does not fit them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Shard `model` over the ranks with FSDP2, in place, and return it.

    Every child of every nn.ModuleList (a GPT's transformer blocks) becomes its own FSDP unit,
    all-gathered just before its forward and backward and freed after; the remaining parameters
    (embeddings, final norm, a head tied to the embedding) form the root unit, so a tied weight
    stays one parameter. Build the optimizer afterwards: it must see the sharded (DTensor)
    parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (info.world_size,))
    # innermost lists first, so nested units are sharded before the unit that holds them
    for module in reversed(list(model.modules())):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if hasattr(model, "generate"):  # a GPT samples outside forward (e.g. TextSamples): gather around it too
        register_fsdp_forward_method(model, "generate")
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (e.g. the grad norm of a sharded model); others unchanged."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def gather_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole `model.state_dict()` on the CPU, on rank 0; {} on the other ranks.

    Collective: every rank must call it. A tied weight appears under each of its names.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_gather_options())


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load rank 0's whole state dict (model.state_dict() names) into a sharded model.

    Collective: rank 0 sends each tensor and every rank keeps its shard; what other ranks
    pass is ignored.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the order of its integer id in optimizer.state_dict()."""
    names = {p: name for name, p in model.named_parameters()}  # a tied weight: its first name
    return [names[p] for group in optimizer.param_groups for p in group["params"]]


def _rekey(state: dict, key: dict) -> dict:
    """An optimizer state dict with every parameter key k replaced by key[k] (names <-> integer ids)."""
    return {"state": {key[k]: entry for k, entry in state["state"].items()},
            "param_groups": [{**g, "params": [key[k] for k in g["params"]]} for g in state["param_groups"]]}


def gather_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer.state_dict() a single process would have, on rank 0; {} on the other ranks.

    PyTorch's gathered optimizer state is keyed by parameter name; this renumbers it with the
    integer ids of `optimizer.state_dict()`, so the checkpoint file does not depend on how
    training was parallelised. Collective: every rank must call it.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_gather_options())
    if not state:
        return {}
    return _rekey(state, {name: i for i, name in enumerate(_param_names(model, optimizer))})


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole optimizer.state_dict() (integer ids, as a single process saves it) into the
    optimizer of a sharded model; every rank passes the same `state` and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    named = _rekey(state, dict(enumerate(_param_names(model, optimizer))))
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------- the Trainer's view
class Parallel:
    """How the Trainer's model is spread over the ranks: one process, DDP or FSDP2, maybe compiled.

    `forward` is what a training step calls: the model itself, its DistributedDataParallel
    wrapper, or either compiled. `model` stays the plain module (under FSDP it holds this rank's
    shard, sharded in place here, so build the optimizer afterwards). The methods hide the
    difference wherever the Trainer touches weights, gradients or optimizer state.
    """

    def __init__(self, model: nn.Module, info: DistInfo, device: torch.device, parallel: str = "ddp",
                 compile: bool = False):
        self.model, self.info = model, info
        self.sharded = info.enabled and parallel == "fsdp"
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.sharded:
            shard_model(model, device, info)
        elif parallel == "fsdp":
            log.warning("parallel='fsdp' shards across torchrun ranks, but this is a single process: training "
                        "unsharded (launch with torchrun --nproc_per_node=N to shard)")
        self.forward: nn.Module = model
        if info.enabled and not self.sharded:  # gradients are averaged across ranks during backward
            ids = [device.index] if device.type == "cuda" else None
            self.forward = self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if compile:
            self.forward = torch.compile(self.forward)

    def gradient_sync(self, last: bool):
        """Ranks exchange gradients only after the last micro-batch of an accumulated step."""
        if self.sharded:  # FSDP2: keep unsharded gradients locally until the last backward
            self.model.set_requires_gradient_sync(last)
        elif self.ddp is not None and not last:
            return self.ddp.no_sync()
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm; returns it (a plain tensor, reduced over the ranks)."""
        return full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return mean_across_ranks(value, self.info)

    def whole_state(self) -> dict[str, torch.Tensor] | None:
        """The whole weights of a sharded model (CPU, rank 0; {} elsewhere); None when `model` holds
        them whole. Collective under FSDP: every rank must call it."""
        return gather_model_state(self.model) if self.sharded else None

    def copy_state(self) -> dict[str, torch.Tensor]:
        """A copy of the whole weights (the best so far): gathered under FSDP, cloned otherwise."""
        if self.sharded:
            return gather_model_state(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.sharded:
            load_model_state(self.model, state)  # rank 0's copy, sent to every rank's shard
        else:
            self.model.load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict | torch.optim.Optimizer:
        """What a checkpoint stores of the optimizer (gathered under FSDP: collective)."""
        return gather_optimizer_state(self.model, optimizer) if self.sharded else optimizer

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.sharded:
            load_optimizer_state(self.model, optimizer, state)
        else:
            optimizer.load_state_dict(state)
