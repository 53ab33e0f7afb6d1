"""Decode + augment throughput of the MMAction2 training pipeline, per DataLoader worker.

Why: a GPU that trains at N clips/s needs N clips/s of decoded, cropped frames, and video
decoding (not the model) is what usually starves it. One worker is one process running exactly
this loop, so single-process throughput is the per-worker rate, and
``workers_needed = ceil(target clips/s / per-worker clips/s)``; a run with several workers checks
that the rate scales on the machine at hand.

This is the one module under `harness.measure` that imports mmaction (lazily, through
`harness.data.pipeline`), so the model bench keeps running on hosts without it.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data as tud

from harness.data.pipeline import AUGMENT_ON, build_video_dataset, train_pipeline

#: GPU training rates (clips/s at batch 32 x 8 x 224) the data pipeline must keep up with: the
#: official H200 rates quoted in the issue, and the rate at which ST-Adapter's training step
#: reaches the 45 % MFU target on H100/H200 (649.9 GFLOPs per clip, 989.4 TFLOP/s datasheet peak).
DEFAULT_TARGETS: dict[str, float] = {
    "ViFi-CLIP official H200": 186.0,
    "ST-Adapter official H200": 278.0,
    "ST-Adapter at 45% MFU": 685.0,
}


def _count(batch: Sequence[Any]) -> int:
    """Collate that only counts (module level so that DataLoader workers can pickle it)."""
    return len(batch)


def _time_dataset(dataset: Any, samples: int, warmup: int) -> float:
    """Seconds per sample of `dataset[i]` in this process (cycling over the list)."""
    n = len(dataset)
    for i in range(warmup):
        dataset[i % n]
    start = time.perf_counter()
    for i in range(samples):
        dataset[(warmup + i) % n]
    return (time.perf_counter() - start) / samples


def _time_loader(dataset: Any, samples: int, workers: int, batch_size: int) -> float:
    """Seconds per sample through a DataLoader with `workers` processes (start-up excluded)."""
    indices = [i % len(dataset) for i in range(samples + batch_size * max(1, workers))]
    loader = tud.DataLoader(tud.Subset(dataset, indices), batch_size=batch_size, num_workers=workers,
                            collate_fn=_count, persistent_workers=False, prefetch_factor=2 if workers else None)
    it = iter(loader)
    seen = 0
    for _ in range(max(1, workers)):  # one batch per worker: processes started, files opened
        seen += next(it)
    start = time.perf_counter()
    counted = 0
    for count in it:
        counted += count
    elapsed = time.perf_counter() - start
    return elapsed / max(1, counted)


def bench_data(
    ann_file: str | os.PathLike,
    data_root: str | os.PathLike,
    num_classes: int,
    num_frames: int = 8,
    image_size: int = 224,
    samples: int = 32,
    warmup: int = 2,
    workers: Sequence[int] = (0,),
    batch_size: int = 4,
    targets: Mapping[str, float] | None = None,
    pipeline_options: Mapping[str, Any] | None = None,
    decoder: str = "auto",
) -> list[dict[str, Any]]:
    """Time the training pipeline on the videos of `ann_file` (paths relative to `data_root`).

    `workers=0` times `dataset[i]` in this process: the per-worker rate. Each other entry times a
    DataLoader with that many worker processes. `targets` maps a name to a GPU training rate
    (clips/s, e.g. from `run_bench`) and adds ``workers_needed`` for each to every row.
    `decoder` is `data.decoder` (auto: prepared frames where `harness data prepare` ran).
    Returns one row per `workers` entry.
    """
    pipeline = train_pipeline(num_frames, image_size, **dict(pipeline_options or {}))
    dataset, info = build_video_dataset(ann_file, data_root, pipeline, num_classes, decoder=decoder)
    per_worker: float | None = None
    rows = []
    for w in workers:
        if w == 0:
            seconds = _time_dataset(dataset, samples, warmup)
            per_worker = 1.0 / seconds
        else:
            seconds = _time_loader(dataset, samples, w, batch_size)
        rate = 1.0 / seconds
        row: dict[str, Any] = {
            "workers": w,
            "samples": samples,
            "ms_per_clip": round(seconds * 1e3, 2),
            "clips_per_s": round(rate, 2),
            "clips_per_s_per_worker": round(rate / max(1, w), 2),
            "num_frames": num_frames,
            "image_size": image_size,
            "videos_listed": info.get("listed"),
            "videos_used": info.get("used"),
            "cpu_count": os.cpu_count(),
            "decoder": info["decoder"]["used"],
        }
        rows.append(row)
    if per_worker is None and rows:  # no in-process row: derive from the loader rows
        per_worker = max(r["clips_per_s_per_worker"] for r in rows)
    for row in rows:
        row["workers_needed"] = {name: workers_needed(rate, per_worker) for name, rate in (targets or {}).items()}
    return rows


def augment_cpu_ms(ann_file: str | os.PathLike, data_root: str | os.PathLike, num_classes: int,
                   num_frames: int = 8, image_size: int = 224, samples: int = 16, runs: int = 5,
                   flip: bool = True, decoder: str = "auto") -> dict[str, float]:
    """CPU ms per training clip (`time.process_time`, median of `runs` runs of `samples` clips,
    the same seeds for both) with `data.augment_on=cpu` and `device`: what moving the random
    crop / flip / resize to the batch saves the DataLoader workers. The device side's own cost
    (one batched crop + resize on the accelerator) is not in these numbers."""
    out: dict[str, float] = {}
    for where in AUGMENT_ON:
        pipeline = train_pipeline(num_frames, image_size, flip=flip, augment_on=where)
        dataset, _ = build_video_dataset(ann_file, data_root, pipeline, num_classes, decoder=decoder, probe=0)
        n = len(dataset)
        dataset[0]  # warm-up: imports, first-call set-up
        per_run = []
        for _ in range(runs):
            start = time.process_time()
            for i in range(samples):
                np.random.seed(i)
                dataset[i % n]
            per_run.append((time.process_time() - start) / samples)
        out[where] = round(statistics.median(per_run) * 1e3, 2)
    return out


def workers_needed(target_clips_per_s: float, per_worker_clips_per_s: float | None) -> int | None:
    """DataLoader workers (one CPU core each) that feed `target` clips/s at the per-worker rate."""
    if not per_worker_clips_per_s or per_worker_clips_per_s <= 0:
        return None
    return math.ceil(target_clips_per_s / per_worker_clips_per_s)


def format_data_bench(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as an aligned text table (targets, when given, as `name: N workers`)."""
    header = ["workers", "clips/s", "clips/s/worker", "ms/clip", "frames", "px", "workers needed"]
    body = []
    for r in rows:
        need = ", ".join(f"{k}: {v}" for k, v in (r.get("workers_needed") or {}).items()) or "-"
        body.append([str(r["workers"]), f"{r['clips_per_s']:.2f}", f"{r['clips_per_s_per_worker']:.2f}",
                     f"{r['ms_per_clip']:.1f}", str(r["num_frames"]), str(r["image_size"]), need])
    widths = [max([len(h)] + [len(c[i]) for c in body]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_augment_line(ms: Mapping[str, float]) -> str:
    """One line: CPU ms per clip with augmentation on the CPU vs on the device, and the saving."""
    cpu, device = ms["cpu"], ms["device"]
    saved = cpu - device
    pct = 100.0 * saved / cpu if cpu > 0 else 0.0
    return (f"CPU time per clip (process_time, median): data.augment_on=cpu {cpu:.1f} ms, device {device:.1f} ms "
            f"(saves {saved:.1f} ms = {pct:.0f} % per clip on the workers; the device's own crop/resize not counted)")
