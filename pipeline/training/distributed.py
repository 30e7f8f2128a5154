"""Data-parallel training over processes started by `torchrun` (one per GPU, or several on a CPU with gloo).

Every process builds the same model from the same seed and draws the same global batches (`fit` seeds its
batch order identically everywhere); each takes its share of a batch (`shard`), and after backward the
gradients are averaged over the processes (`average_gradients`) before clipping and the optimizer step.
That is DistributedDataParallel's arithmetic, done on the gradients directly because the recipes call their
models' own methods (`training_outputs`, the MAE's masked forward), not `forward`, which DDP's hooks need.
With a global batch divisible by the number of processes, and losses that are means over a batch's samples,
a run on n processes follows the single-process run with the same global batch, up to float rounding.

Outside `torchrun` (WORLD_SIZE unset or 1) every function here is a no-op, so single-process runs are
unchanged.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """The process that writes shared files (checkpoints, resume state)."""
    return rank() == 0


def init_from_env() -> str | None:
    """Join the process group `torchrun` describes (WORLD_SIZE > 1): nccl with one GPU per process
    (LOCAL_RANK), else gloo on the CPU. Returns this process's device, or None outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def shard(indices: np.ndarray) -> np.ndarray:
    """This process's share of a global batch [B] (every world_size-th sample from its rank)."""
    return indices[rank() :: world_size()] if active() else indices


def broadcast_parameters(model: nn.Module) -> None:
    """Start every process from rank 0's weights and buffers (the same seed gives them anyway; this makes
    it so whatever initialised them)."""
    if active():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce)."""
    if not active():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sum_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Per-name sums over the processes (the epoch's loss sums and sample counts, for its mean)."""
    if not active():
        return values
    names = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
    tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(names, tensor.tolist(), strict=True))


def training_device(default: str) -> str:
    """The device a training stage uses: under torchrun this process's GPU (or the CPU, with gloo), joined to
    the process group; otherwise `default` (`pipeline.runtime.configure_torch`'s choice)."""
    return init_from_env() or default


def finish() -> None:
    """End of a stage under torchrun: every process waits until all are done (rank 0 has written the
    outputs), then leaves the process group. A no-op outside torchrun."""
    if active():
        dist.barrier()
        dist.destroy_process_group()
