"""The machine a benchmark runs on: what it is (card, driver, library versions: stamped on every
row), how fast it can go (`measure_matmul_peak`, the MFU denominator, and the datasheet peak of
known cards) and the primitives that time a step and measure its peak memory.

Why apart from the bench: these know nothing of methods or models; `bench` and `data_bench`
(and a future benchmark) share them.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import open_clip
import torch

#: Datasheet dense (no sparsity) bf16 tensor-core peaks, FLOP/s, matched on the CUDA device name.
#: Reported next to the measured-peak MFU because papers quote MFU against these.
DATASHEET_BF16_PEAK = (
    ("H100 PCIe", 756e12),
    ("H100 80GB HBM3", 989.4e12),  # H100 SXM5
    ("H200", 989.4e12),  # H200 SXM
    ("A100", 312e12),
)


# -- environment -----------------------------------------------------------------------------

def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(device: str) -> dict[str, Any]:
    """Card, driver and library versions, stamped on every row."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    return {
        "device": str(dev),
        "card": torch.cuda.get_device_name(dev) if cuda else _cpu_name(),
        "driver": _driver_version() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "open_clip": getattr(open_clip, "__version__", "?"),
        "python": platform.python_version(),
    }


def datasheet_peak(card: str) -> float | None:
    """Dense bf16 datasheet peak of a known card (FLOP/s), else None."""
    if "NVL" in card:  # NVL variants have their own (lower) clocks: not in the table
        return None
    for fragment, peak in DATASHEET_BF16_PEAK:
        if fragment in card:
            return peak
    return None


# -- timing primitives -----------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """Run `warmup` untimed steps then `iters` timed ones; per-step seconds and the first step's
    time (which includes compilation)."""
    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    _sync(device)
    times: list[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) / 1e3 for start, end in events]
    else:
        for _ in range(iters):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_step_s": first}


def measure_matmul_peak(device: str | torch.device, dtype: torch.dtype = torch.bfloat16,
                        size: int | None = None, iters: int | None = None) -> float:
    """Dense matmul throughput (FLOP/s) of `dtype` on `device`, measured now: the MFU denominator.

    The fastest of a few rounds of timed n x n x n matmuls (n = 8192 on GPU, 1024 on CPU).
    Measured rather than looked up so MFU is honest about the clocks, power cap and library of
    the very run (the datasheet MFU is reported beside it).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = size or (8192 if cuda else 1024)
    iters = iters or (20 if cuda else 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    # The fastest single matmul: a peak, robust to other jobs sharing the machine.
    best = min(time_steps(lambda: torch.mm(a, b), iters=iters, warmup=2, device=device)["min_s"]
               for _ in range(3))
    return 2.0 * n ** 3 / best


# -- memory ----------------------------------------------------------------------------------

class _PeakMemory:
    """Peak memory of a block: CUDA max allocated, or on Linux CPU the peak RSS growth (VmHWM
    reset through /proc/self/clear_refs); None where neither is available."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind: str | None = None
        self.peak_bytes: int | None = None
        self._rss0: int | None = None

    @staticmethod
    def _status_kib(field: str) -> int | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def __enter__(self) -> _PeakMemory:  # noqa: PYI034 - private class, never subclassed
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda max_memory_allocated"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")  # resets VmHWM to the current RSS
                self._rss0 = self._status_kib("VmRSS")
                self.kind = "cpu peak RSS growth" if self._rss0 is not None else None
            except OSError:
                self.kind = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind is not None:
            hwm = self._status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm - (self._rss0 or 0)) * 1024
