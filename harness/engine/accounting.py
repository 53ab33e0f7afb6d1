"""What a job cost: wall time, clips per second in training and evaluation, the fraction of
step time spent waiting for data, the device, GPU-hours and peak memory (`metrics.accounting`).

Why in every result: two numbers of one method are only comparable in cost when their
throughput was measured on the same kind of device with the input pipeline keeping up. A data
wait near 1 says the GPU (or CPU) sat idle waiting for decoded clips, i.e. the number measures
the data loader, not the method (docs/performance.md: how to add workers or prepare frames).

Training times come from mmengine's IterTimerHook through the message hub (`train/data_time`:
from the end of the previous step until the batch arrived; `train/time`: the whole step
including that wait), summed by `harness.engine.hooks.StepTimerHook` into a `StepTimes`.
Evaluation, which runs its own loop, times its batches with `EvalTimer` the same way.

This module imports no mmengine: `harness report` reads `accounting_columns` from it.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from harness.measure.hardware import _cpu_name


@dataclass
class StepTimes:
    """Sums over steps: total step seconds (data wait included), data-wait seconds, clips."""

    seconds: float = 0.0
    data_seconds: float = 0.0
    steps: int = 0
    clips: int = 0

    def add(self, seconds: float, data_seconds: float, clips: int = 0) -> None:
        self.seconds += seconds
        self.data_seconds += data_seconds
        self.steps += 1
        self.clips += clips

    def summary(self, clips: int | None = None) -> dict[str, Any]:
        """seconds, clips, clips_per_second and data_wait_fraction (data wait / step time);
        `clips` replaces the counted number (e.g. all processes' clips after a gather)."""
        clips = self.clips if clips is None else clips
        return {"seconds": round(self.seconds, 4), "data_seconds": round(self.data_seconds, 4),
                "steps": self.steps, "clips": clips,
                "clips_per_second": round(clips / self.seconds, 3) if self.seconds > 0 else None,
                "data_wait_fraction": round(self.data_seconds / self.seconds, 4) if self.seconds > 0 else None}


def batch_size(data_batch: Any) -> int:
    """Clips in a `pseudo_collate` batch ({'inputs': [clip, ...], ...}); 0 if unknown."""
    inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
    return len(inputs) if isinstance(inputs, (list, tuple)) else 0


class EvalTimer(StepTimes):
    """Times an evaluation loop: `for batch in timer.batches(loader)`. The time spent inside
    the loader's `next` is data wait; the rest (the caller's work on the batch) is compute."""

    def batches(self, loader: Iterable) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            iterator = iter(loader)  # starting the loader's workers is waiting for data too
            asked = start
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    self.data_seconds += time.perf_counter() - asked
                    return
                self.data_seconds += time.perf_counter() - asked
                self.steps += 1
                self.clips += batch_size(batch)
                yield batch
                asked = time.perf_counter()
        finally:
            self.seconds += time.perf_counter() - start


def device_name(device: Any) -> str:
    """The GPU's name, or `cpu: <model name> (<n> cores)` (as `harness bench` stamps its rows)."""
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)

    return f"cpu: {_cpu_name()}"


def peak_memory(device: Any) -> tuple[int | None, str]:
    """(bytes, what was measured): CUDA's max allocated on `device` since the job started, or on
    CPU this process's max resident set size (its whole life: a second job in the same process
    reports the larger of both; DataLoader workers are other processes, not counted)."""
    if getattr(device, "type", str(device)) == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        import resource
    except ImportError:  # not on Unix
        return None, "unavailable"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"  # macOS: bytes; Linux: KiB


class JobAccounting:
    """Started when a job starts; `finish` gives the record stored as `metrics.accounting`."""

    def __init__(self, device: Any, processes: int = 1) -> None:
        self.device = device
        self.processes = processes
        if getattr(device, "type", str(device)) == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.start = time.perf_counter()

    def finish(self, train: dict[str, Any] | None, evals: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
        """`train`: the training loop's `StepTimes.summary()` (None when nothing was trained);
        `evals`: each evaluation's summary, summed into one."""
        wall = time.perf_counter() - self.start
        gpus = self.processes if getattr(self.device, "type", str(self.device)) == "cuda" else 0
        memory, kind = peak_memory(self.device)
        total = StepTimes()
        for ev in (ev for ev in evals if ev):
            total.seconds += ev["seconds"]
            total.data_seconds += ev["data_seconds"]
            total.steps += ev["steps"]
            total.clips += ev["clips"]
        return {"wall_seconds": round(wall, 3), "device": device_name(self.device), "processes": self.processes,
                "gpus": gpus, "gpu_hours": round(wall * gpus / 3600.0, 6), "peak_memory_bytes": memory,
                "peak_memory_kind": kind, "train": train, "eval": total.summary() if total.steps else None}


def accounting_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """A result's accounting as flat per_job.csv columns (None for results written before it)."""
    acc = metrics.get("accounting") or {}
    train, ev = acc.get("train") or {}, acc.get("eval") or {}
    memory = acc.get("peak_memory_bytes")
    return {"wall_s": acc.get("wall_seconds"), "train_clips_per_s": train.get("clips_per_second"),
            "train_data_wait": train.get("data_wait_fraction"), "eval_clips_per_s": ev.get("clips_per_second"),
            "eval_data_wait": ev.get("data_wait_fraction"), "device": acc.get("device"),
            "gpu_hours": acc.get("gpu_hours"),
            "peak_mem_mib": round(memory / 2**20, 1) if memory is not None else None,
            "peak_mem_kind": acc.get("peak_memory_kind")}
