"""The torchrun process group, as the engine and the results store see it: world size, rank 0,
joining the group, and rank 0's decisions broadcast to every process.

Why a module of its own: locks and the store (below the engine) must make decisions once, on
rank 0, without importing the engine; torch is imported only when there are several processes.
"""
from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def rank0() -> bool:
    return rank() == 0


def init_distributed() -> None:
    """Join the torchrun process group (gloo on CPU-only hosts, nccl on GPUs) once per process.

    mmengine's own initialisation assumes CUDA (`torch.cuda.set_device`); doing it here first
    lets the same command run on CPU processes (tests, laptops) and GPUs alike."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        import atexit

        atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    """Leave the group together at exit: without it each process tears gloo down on its own at
    interpreter shutdown, and a rank that exits while its peer still holds the connection can
    abort ("terminate called without an active exception") after the results were written."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except Exception:  # a peer already gone (killed): nothing left to wait for
        pass
    dist.destroy_process_group()


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every process of a torchrun job (the value itself in one process):
    decisions that touch files (locks, which checkpoint to resume) are made once, by rank 0."""
    if world_size() <= 1:
        return value
    import torch.distributed as dist

    init_distributed()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
