"""Stopping a job at an optimiser-update boundary when the cluster says it will end (preemption,
time limit), so that its requeued run resumes exactly where it stopped.

SLURM sends a signal (USR2 by default, `#SBATCH --signal=USR2@<s>`) some seconds before it ends a
job. A launcher task (harness/launch/task.py) calls `enable(signal)`: from then on the signal
only sets a flag while the training loop runs, and the engine (harness/engine/checkpoints.py)
asks `stop_agreed()` after every optimiser update; when it is True the engine writes a
checkpoint of that update boundary and raises `Preempted`, which unwinds the job (its lock is
released, nothing is recorded as a failure) up to the task, which requeues it. Outside the
training loop (building the model, evaluating) there is no boundary to wait for: the signal raises
`Preempted` at once and the job resumes from its last checkpoint.

Several processes (torchrun inside a task): every rank installs the handler (the launcher sets
`HARNESS_PREEMPTIBLE`), the task process writes the stop file named by `HARNESS_STOP_FILE` when
it gets the signal, and at each update boundary the ranks combine (all-reduce MAX) "I saw the
signal" and, on rank 0, "the stop file exists": every rank stops after the same update, whichever
of them the cluster signalled. Without the launcher none of this is active: a plain `harness run`
pays nothing and the signal keeps its default meaning.

A second signal (or the task's grace timer re-sending it when no update boundary came in time)
raises `Preempted` at once, from wherever the process is.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PREEMPTIBLE_ENV = "HARNESS_PREEMPTIBLE"  # signal name (e.g. "USR2") in every rank of a launcher task
STOP_FILE_ENV = "HARNESS_STOP_FILE"  # the task writes this file when the cluster's signal arrives
#: Exit status of a process that stopped for preemption (torchrun workers); the task requeues it.
EXIT_PREEMPTED = 75


class Preempted(BaseException):  # noqa: N818 - a control-flow signal like KeyboardInterrupt
    """The job stopped because its cluster allocation ends; it resumes when requeued. A
    BaseException so that no `except Exception` (per-job failure records) swallows it."""


class _State:
    def __init__(self) -> None:
        self.signum: int | None = None  # the signal handled, when enabled
        self.requested = threading.Event()
        self.deferring = 0  # > 0 inside the training loop: the signal waits for the next update
        self.boundary: str | None = None  # where the last stop happened, for the record


_STATE = _State()


def signal_number(name: str) -> int:
    """'USR2' / 'SIGUSR2' / '12' -> the signal number (ValueError naming the text)."""
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    value = getattr(signal, text if text.startswith("SIG") else "SIG" + text, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown signal {name!r} (e.g. USR2)")
    return int(value)


def _handler(signum: int, frame: Any) -> None:
    first = not _STATE.requested.is_set()
    _STATE.requested.set()
    if _STATE.deferring and first:
        return  # the engine stops at the next update boundary (stop_agreed)
    raise Preempted(f"signal {signal.Signals(signum).name}: the allocation ends; resuming from the last checkpoint "
                    "when requeued")


def enable(signum: int) -> None:
    """Handle `signum` as the cluster's "ending soon" notice in this process (main thread only)."""
    _STATE.signum = signum
    _STATE.requested.clear()
    signal.signal(signum, _handler)


def enable_from_environment() -> bool:
    """`enable` when a launcher task started this process (HARNESS_PREEMPTIBLE); True if so."""
    name = os.environ.get(PREEMPTIBLE_ENV)
    if not name:
        return False
    enable(signal_number(name))
    return True


def enabled() -> bool:
    return _STATE.signum is not None


def requested() -> bool:
    """This process saw the signal, or (from the task process) the stop file exists."""
    if _STATE.requested.is_set():
        return True
    stop = os.environ.get(STOP_FILE_ENV)
    return bool(stop) and os.path.exists(stop)


@contextmanager
def deferred() -> Iterator[None]:
    """Inside, the signal only sets the flag: the training loop stops at its next update boundary."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1


def stop_agreed(world_size: int = 1) -> bool:
    """Whether every process should stop after the current update: the flags of all processes
    combined (all-reduce MAX), so they stop after the same update. False when not enabled (one
    check of a flag: plain runs pay nothing)."""
    if not enabled():
        return False
    mine = requested()
    if world_size <= 1:
        return mine
    import torch
    import torch.distributed as dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    flag = torch.tensor([1 if mine else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def note_boundary(text: str) -> None:
    """Record where the job stopped (the task writes it into the job's launcher events)."""
    _STATE.boundary = text


def last_boundary() -> str | None:
    return _STATE.boundary


def reset() -> None:
    """Back to the default (tests; a task that finished its job)."""
    if _STATE.signum is not None:
        signal.signal(_STATE.signum, signal.SIG_DFL)
    _STATE.signum = None
    _STATE.requested.clear()
    _STATE.deferring = 0
    _STATE.boundary = None
