"""Data-parallel training across processes for the Pyro backend (``torchrun``).

``torchrun --nproc-per-node N -m probdiff fit ...`` starts N processes with RANK and
WORLD_SIZE set. Each takes its share of every minibatch (rows ``rank::N`` of the batch the
fit's seed draws), computes the ELBO of its share scaled to the whole data set, and the
gradients are averaged across processes (all-reduce) before every optimiser step, so all
processes hold the same parameters: the step of one process with the combined batch. Process
0 alone writes the run folder, its checkpoints and everything after training; the others
train in lockstep and exit. The process group is gloo on CPU and NCCL on CUDA.
"""

from __future__ import annotations

import os

from probdiff.errors import ProbdiffError


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ProbdiffError("RANK and WORLD_SIZE must be integers") from None
    if size < 1 or not 0 <= rank < size:
        raise ProbdiffError(f"RANK {rank} is not in 0..WORLD_SIZE-1 = {size - 1}")
    return rank, size


def is_worker() -> bool:
    """A process other than the first of a torchrun job."""
    return world()[0] > 0


def start(device: str) -> None:
    """Join the process group (once per process)."""
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def finish() -> None:
    """Leave the process group once training is over, all processes together (a process
    that exits holding it can abort in the group's destructor, failing the job). Outside
    torchrun, nothing (and torch is not imported)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(idx, rank: int, size: int):
    """This process's rows of a batch: every ``size``-th from ``rank``; the batch must
    split evenly, so every process's share has the same weight."""
    if len(idx) % size:
        raise ProbdiffError(
            f"a batch of {len(idx)} rows does not split over {size} processes: use a "
            f"--batch-size divisible by {size}"
        )
    return idx[rank::size]


def average_gradients(params, loss: float) -> float:
    """Replace each parameter's gradient (in the order given; every process gives the same
    parameters, with a gradient or None alike) by its mean over the processes, in one
    all-reduce of a flat buffer that also carries ``loss``; returns the mean loss."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    loss_t = torch.tensor([loss], dtype=torch.float64)
    flat = torch.cat([g.reshape(-1).double() for g in grads] + [loss_t])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].reshape(g.shape))
        offset += n
    return float(flat[-1])


def broadcast(tensors) -> None:
    """Process 0's values into every process's tensors, in the order given."""
    import torch.distributed as dist

    for t in tensors:
        dist.broadcast(t.data, 0)
