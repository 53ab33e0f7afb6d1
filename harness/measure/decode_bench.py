"""`harness bench --data --synthetic kinetics-like|ssv2-like`: every decode path on generated
videos shaped like the real datasets, checked for exactness, timed as CPU time per clip.

Why: a faster decode path is only worth having if it returns the frames the reference pipeline
samples, and on a shared machine wall time swings too much to compare paths. So, per path:

* exactness: the loading steps alone run on every video in training mode (several seeds) and
  test mode, and the frame index barcoded into each returned frame
  (`harness.data.synthetic_video`) is compared with the index `SampleFrames` asked for; pixels
  are compared with the reference decoder's frames for the same indices (mean absolute
  difference per value). A path with any wrong index is reported `exact: no`; nothing here
  ever picks a path, the user does (`data.decoder`);
* speed: the full training pipeline as `harness run` builds it (decode, resize, random resized
  crop, flip, format, pack), `samples` clips cycling over the videos with fixed seeds, timed with
  `time.process_time` (CPU seconds of this process, all its threads), median of `runs` runs;
  clips/s per core = 1 / CPU seconds per clip. Wall time is reported too.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.pipeline import _choose_decoder, _loading, register_transforms, train_pipeline
from harness.data.prepared import load_manifest, prepare_videos
from harness.data.synthetic_video import PROFILES, ensure_synthetic_videos, read_frame_index

#: name -> (data.decoder, decode threads, mmaction DecordDecode mode)
PATHS: dict[str, tuple[str, int, str]] = {
    "decord": ("decord", 1, "accurate"),
    "decord-efficient": ("decord", 1, "efficient"),
    "decord-2threads": ("decord", 2, "accurate"),
    "pyav": ("pyav", 1, "accurate"),
    "pyav-2threads": ("pyav", 2, "accurate"),
    "frames": ("frames", 1, "accurate"),
    "gpu": ("gpu", 1, "accurate"),
}


def _gpu_available() -> bool:
    try:
        import torch
        import torchcodec  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _pipeline(path: str, base: list[dict], root: Path, rels: list[str]) -> list[dict]:
    decoder, threads, mode = PATHS[path]
    pipeline, _ = _choose_decoder(base, decoder, threads, root, rels, "error")
    if mode != "accurate":
        pipeline = [dict(s, mode=mode) if s.get("type") == "DecordDecode" else s for s in pipeline]
    return pipeline


def _compose(pipeline: list[dict]) -> Any:
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    register_transforms()
    with DefaultScope.overwrite_default_scope("mmaction"):
        return Compose(pipeline)


def _load(compose: Any, filename: str, seed: int) -> dict:
    np.random.seed(seed)
    return compose({"filename": filename, "start_index": 0, "modality": "RGB", "label": 0})


def check_exact(path: str, root: Path, rels: list[str], frames: int, seeds: int = 4,
                reference: dict | None = None) -> dict[str, Any]:
    """Frames checked / wrong for `path` (train mode with `seeds` seeds, and test mode, on every
    video) and the pixel difference to the reference path's frames. `reference` maps
    (video, seed, test mode) to (indices, frames) of the first path checked with it (the
    reference decoder); later paths must ask for the same indices and return those frames."""
    checked = wrong = 0
    diffs: list[float] = []
    for test_mode in (False, True):
        compose = _compose(_pipeline(path, _loading(frames, 1, test_mode, "video"), root, rels))
        for rel in rels:
            for seed in range(seeds if not test_mode else 1):
                out = _load(compose, str(root / rel), seed)
                asked = np.asarray(out["frame_inds"]).reshape(-1).tolist()
                got = [read_frame_index(img) for img in out["imgs"]]
                checked += len(asked)
                key = (rel, seed, test_mode)
                ref = reference.setdefault(key, (asked, out["imgs"])) if reference is not None else (asked, None)
                # wrong: another frame than asked for, or asked for other indices than the reference
                wrong += sum(a != g or a != r for a, g, r in zip(asked, got, ref[0]))
                if ref[1] is not None and ref[1] is not out["imgs"] and ref[1][0].shape == out["imgs"][0].shape:
                    diffs.append(float(np.mean([np.abs(a.astype(np.int16) - b).mean()
                                                for a, b in zip(ref[1], out["imgs"])])))
    return {"frames_checked": checked, "frames_wrong": wrong, "exact": wrong == 0,
            "pixel_mean_abs_diff": round(max(diffs), 3) if diffs else None}


def time_path(path: str, root: Path, rels: list[str], frames: int, image_size: int, samples: int,
              runs: int, flip: bool) -> dict[str, Any]:
    """Median CPU and wall seconds per training clip over `runs` runs of `samples` clips."""
    compose = _compose(_pipeline(path, train_pipeline(frames, image_size, flip=flip), root, rels))
    _load(compose, str(root / rels[0]), 0)  # warm-up: imports, first-call set-up
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(samples):
            _load(compose, str(root / rels[i % len(rels)]), i)
        cpu.append((time.process_time() - c0) / samples)
        wall.append((time.perf_counter() - w0) / samples)
    c, w = statistics.median(cpu), statistics.median(wall)
    return {"cpu_ms_per_clip": round(c * 1e3, 2), "clips_per_s_per_core": round(1 / c, 1),
            "wall_ms_per_clip": round(w * 1e3, 2), "cpu_ms_runs": [round(x * 1e3, 2) for x in cpu]}


def bench_synthetic(kind: str, cache_dir: str | None = None, paths: list[str] | None = None, frames: int = 8,
                    image_size: int = 224, samples: int = 24, runs: int = 5, count: int = 3,
                    gop: int | None = None, subsampling: str = "420") -> list[dict[str, Any]]:
    """One row per decode path on `count` generated `kind` videos (see the module doc)."""
    data = ensure_synthetic_videos(kind, cache_dir, count=count, gop=gop)
    root = data / "videos"
    rels = [line.split()[0] for line in (data / "list.txt").read_text().splitlines() if line.strip()]
    names = paths or [p for p in PATHS if p != "gpu" or _gpu_available()]
    if "frames" in names:  # no-op when prepared with these settings already
        prepare_videos(root, rels, subsampling=subsampling)
    manifest = load_manifest(root) or {"videos": {}}
    video_mb = sum(os.path.getsize(root / r) for r in rels) / len(rels) / 1e6
    reference: dict = {}
    rows = []
    for name in ["decord"] + [n for n in names if n != "decord"]:
        row: dict[str, Any] = {"path": name, "synthetic": kind, "profile": PROFILES[kind].note, "videos": len(rels),
                               "frames": frames, "image_size": image_size, "samples": samples, "runs": runs,
                               "gop": gop or "default",
                               "jpeg": f"q95 {subsampling}" if name == "frames" else None}
        row.update(check_exact(name, root, rels, frames, reference=reference))
        row.update(time_path(name, root, rels, frames, image_size, samples, runs, flip=True))
        prepared_mb = [e["bytes"] / 1e6 for r, e in manifest["videos"].items() if r in rels]
        row["disk_mb_per_video"] = round(statistics.mean(prepared_mb), 2) if name == "frames" and prepared_mb \
            else round(video_mb, 2)
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = ["path", "exact", "frames wrong", "px diff", "CPU ms/clip", "clips/s/core", "wall ms/clip", "MB/video"]
    body = [[r["path"], "yes" if r["exact"] else "NO", f"{r['frames_wrong']}/{r['frames_checked']}",
             "-" if r["pixel_mean_abs_diff"] is None else f"{r['pixel_mean_abs_diff']:.2f}",
             f"{r['cpu_ms_per_clip']:.1f}", f"{r['clips_per_s_per_core']:.1f}", f"{r['wall_ms_per_clip']:.1f}",
             f"{r['disk_mb_per_video']:.2f}"] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in body]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(line.rstrip() for line in lines) + "\n"
