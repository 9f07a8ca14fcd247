"""Data-parallel training with torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc_per_node 2 -m training train --config C --data D --out RUN      # one node
    torchrun --nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        --nproc_per_node 8 -m training train ...                                     # several nodes

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op and training
runs in one process as before. Backend: NCCL on CUDA, gloo on the CPU. Every rank builds the same
group-disjoint split (rank 0 writes split.json, the others read it back), a DistributedSampler
shards the training set, `batch_size` stays the global batch, and only rank 0 writes checkpoints,
metrics and logs. The supervised trainer wraps the network in DistributedDataParallel (through
`forward_aux`, which every criterion calls); the episodic trainer averages gradients with
all_reduce after each meta-batch, because its inner loops run the backbone through
`torch.func.functional_call`, not through a module's forward that DDP could hook.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device_type: str) -> World:
    """Join the process group torchrun describes in the environment; a one-process world otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


class _AuxForward(nn.Module):
    """DDP synchronises what goes through forward(); the criteria call forward_aux."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.forward_aux(x)


class DataParallelForward:
    """What a criterion is handed under DDP: `forward_aux(x)` runs the network through the wrapper."""

    def __init__(self, model: nn.Module, device: torch.device):
        ids = [device.index] if device.type == "cuda" else None
        # unused parameters: a network's branches can sit out a loss (e.g. gated_fusion's local head)
        self.forward_aux = DistributedDataParallel(_AuxForward(model), device_ids=ids, find_unused_parameters=True)


def average_gradients(module: nn.Module, world: World) -> None:
    """Mean of every parameter's gradient over the ranks (what DDP does, for loops DDP cannot hook)."""
    if world.size <= 1:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world.size
