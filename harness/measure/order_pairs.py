"""Do methods see frame order? Accuracy on the embedded dataset's order-only class pairs.

The embedded dataset has class pairs whose videos differ only in temporal order (moving left /
right, growing / shrinking, rotating cw / ccw, appearing / disappearing): one member of each pair
is rendered as the exact time reversal of the other. A frame-order-blind method (mean-pooled
frames: zero-shot CLIP, ViFi-CLIP) is at chance on them by construction; a temporal method should
not be. Pair accuracy = over validation videos of a pair's classes, how often the true class
scores above its partner (chance 50%).

Uses the normal engine (fully supervised protocol on the embedded dataset) and the per-video
scores each job saves (`predictions/val.npz`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError


def pair_accuracy(scores: np.ndarray, labels: np.ndarray, classnames: list[str],
                  pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Percent of pair-class videos whose own class outscores the partner class, per pair and
    overall."""
    index = {name: i for i, name in enumerate(classnames)}
    per_pair: dict[str, float] = {}
    hits = total = 0
    for a, b in pairs:
        if a not in index or b not in index:
            continue
        ia, ib = index[a], index[b]
        mask = (labels == ia) | (labels == ib)
        if not mask.any():
            continue
        own = scores[mask, labels[mask]]
        partner = np.where(labels[mask] == ia, scores[mask, ib], scores[mask, ia])
        correct = int((own > partner).sum())
        per_pair[f"{a} / {b}"] = 100.0 * correct / int(mask.sum())
        hits += correct
        total += int(mask.sum())
    return {"pair_accuracy": 100.0 * hits / total if total else float("nan"), "videos": total, "per_pair": per_pair}


def score_run(run_dir: Path) -> list[dict[str, Any]]:
    """Pair accuracy of every finished job of a fully supervised embedded run."""
    import json

    from harness.data.embedded import ORDER_PAIRS

    rows = []
    for metrics_file in sorted(run_dir.glob("jobs/*/metrics.json")):
        record = json.loads(metrics_file.read_text())
        pred = np.load(metrics_file.parent / "predictions" / "val.npz")
        res = pair_accuracy(pred["scores"], pred["labels"], [str(c) for c in pred["classnames"]], ORDER_PAIRS)
        rows.append({"method": record["job"]["method"], "top1": record["metrics"]["evals"]["val"]["top1"],
                     "pair_accuracy": res["pair_accuracy"], "pair_videos": res["videos"], "per_pair": res["per_pair"]})
    return rows


def run_order_pairs(methods: str | Sequence[str] | None, out: Path, epochs: int = 10,
                    extra_sets: Sequence[str] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Train each method briefly on the embedded dataset (fully supervised, all classes) and
    score the order-only pairs. `methods`: names, 'a,b' or None (every method, those that model
    frame order first). A job that fails stops the benchmark with its own error message."""
    from harness import api
    from harness.jobs import expand_jobs
    from methods.registry import list_methods

    names = methods if methods else list_methods(True) + list_methods(False)
    req = api.request(names, "fully_supervised", sets=[f"schedule.epochs={epochs}", *(extra_sets or [])])
    jobs = expand_jobs(req)
    store = api.run(req, out, jobs=jobs, progress=progress)
    failed = api.failures(store, jobs)
    if failed:
        first = failed[0]
        raise HarnessError(f"order-pair training of {first.get('method')} failed: {first.get('type')}: "
                           f"{first.get('message')} ({len(failed)} failed job(s); details: {out}/jobs/*/error.json)")
    return score_run(out)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | top-1 (12 classes) | order-pair accuracy (chance 50) | pair videos |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['top1']:.1f} | {r['pair_accuracy']:.1f} | {r['pair_videos']} |")
    return "\n".join(lines)
