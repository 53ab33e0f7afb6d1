"""Measurement of the methods: parameter counts, FLOPs and throughput/MFU.

Why a package of its own that imports only torch and open_clip (and `methods`): the GPU bench
must run on a bare offline host that has torch but none of mmengine / mmaction2. Submodules are
imported lazily (`from harness.measure.bench import run_bench`); this file imports nothing heavy.
`data_bench` is the one submodule allowed to import mmaction (lazily), because it measures the
data pipeline itself.
"""
from __future__ import annotations

__all__ = ["bench", "flops", "params"]
