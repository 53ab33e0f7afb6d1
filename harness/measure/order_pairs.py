"""Do methods see frame order? Accuracy on the embedded dataset's order-only class pairs.

The embedded dataset has class pairs whose videos differ only in temporal order (moving left /
right, growing / shrinking, rotating cw / ccw, appearing / disappearing): one member of each pair
is rendered as the exact time reversal of the other. A frame-order-blind method (mean-pooled
frames: zero-shot CLIP, ViFi-CLIP) is at chance on them by construction; a temporal method should
not be. Pair accuracy = over validation videos of a pair's classes, how often the true class
scores above its partner (chance 50%).

Scores what the normal engine wrote (fully supervised protocol on the embedded dataset): the
per-video scores each job saves (`predictions/val.npz`); the training front end is
`harness.commands.order_pairs` (`harness bench --order-pairs`). With several seeds, each method's mean over them
comes with its standard error, and every (temporal, order-blind) pair of methods gets a verdict:
the issue's criterion (the temporal one ahead by >= 15 points) and whether the gap is outside
noise (`summarize_seeds`, `order_verdicts`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.embedded import ORDER_PAIRS
from harness.metrics import (
    accuracy_standard_error,
    mean_standard_error,
    run_average_standard_error,
    within_noise,
)
from methods.registry import list_methods

#: The issue's criterion: every temporal method ahead of every order-blind one by this many points.
MARGIN = 15.0


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


def score_run(run_dir: Path, job_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Pair accuracy of every finished job of a fully supervised embedded run (only `job_ids`
    when given: the jobs of this invocation, not older ones in the same folder)."""
    rows = []
    for metrics_file in sorted(run_dir.glob("jobs/*/metrics.json")):
        if job_ids is not None and metrics_file.parent.name not in job_ids:
            continue
        record = json.loads(metrics_file.read_text())
        pred = np.load(metrics_file.parent / "predictions" / "val.npz")
        res = pair_accuracy(pred["scores"], pred["labels"], [str(c) for c in pred["classnames"]], ORDER_PAIRS)
        rows.append({"method": record["job"]["method"], "seed": record["job"].get("seed"),
                     "top1": record["metrics"]["evals"]["val"]["top1"],
                     "pair_accuracy": res["pair_accuracy"], "pair_videos": res["videos"],
                     "pair_se": accuracy_standard_error(res["pair_accuracy"], res["videos"]),
                     "per_pair": res["per_pair"]})
    return rows


def summarize_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (in first-seen order): its pair accuracy per seed, the mean over seeds and
    three standard errors. `se_seeds`: over seeds (sample std / sqrt(k); NaN for one seed);
    `se_eval`: the eval set's binomial error (every seed scores the same videos, so it does not
    shrink with more seeds: `run_average_standard_error` with one shared eval set); `se`: both
    together, sqrt(se_seeds^2 + se_eval^2) (se_eval alone for one seed), used for the verdicts."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    out = []
    for method, runs in by_method.items():
        runs = sorted(runs, key=lambda r: (r.get("seed") is None, r.get("seed")))
        values = [float(r["pair_accuracy"]) for r in runs]
        mean, se_seeds = mean_standard_error(values)
        ses = [r.get("pair_se", accuracy_standard_error(r["pair_accuracy"], r["pair_videos"])) for r in runs]
        se_eval = run_average_standard_error(ses, ["val"] * len(ses))
        se = se_eval if math.isnan(se_seeds) else math.sqrt(se_seeds ** 2 + se_eval ** 2)
        out.append({"method": method, "seeds": [r.get("seed") for r in runs], "per_seed": values,
                    "mean": mean, "se_seeds": se_seeds, "se_eval": se_eval, "se": se,
                    "top1_mean": float(np.mean([r["top1"] for r in runs]))})
    return out


def order_verdicts(summary: Sequence[dict[str, Any]], temporal: Sequence[str], order_blind: Sequence[str],
                   margin: float = MARGIN) -> list[dict[str, Any]]:
    """For every (temporal, order-blind) pair of methods present in `summary`: the mean
    difference in pair accuracy, whether it reaches `margin` points (the issue's criterion) and
    whether it is outside noise (`metrics.within_noise` on the two means and their `se`)."""
    found = {s["method"]: s for s in summary}
    out = []
    for t in (m for m in temporal if m in found):
        for b in (m for m in order_blind if m in found):
            a, o = found[t], found[b]
            diff = a["mean"] - o["mean"]
            out.append({"temporal": t, "order_blind": b, "difference": diff, "meets_margin": diff >= margin,
                        "outside_noise": not within_noise(a["mean"], a["se"], o["mean"], o["se"]),
                        "seeds": min(len(a["per_seed"]), len(o["per_seed"]))})
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | seed | top-1 (12 classes) | order-pair accuracy (chance 50) | SE | pair videos |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        se = r.get("pair_se", accuracy_standard_error(r["pair_accuracy"], r["pair_videos"]))
        lines.append(f"| {r['method']} | {r.get('seed', '')} | {r['top1']:.1f} | {r['pair_accuracy']:.1f} | "
                     f"{se:.1f} | {r['pair_videos']} |")
    return "\n".join(lines)


def format_summary(summary: Sequence[dict[str, Any]], verdicts: Sequence[dict[str, Any]],
                   margin: float = MARGIN) -> str:
    """Mean ± SE per method over seeds, then the verdict per (temporal, order-blind) pair."""
    lines = ["### Mean over seeds", "",
             "| method | seeds | per seed | mean | SE (seeds) | SE (eval set) | SE |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        per_seed = ", ".join(f"{v:.1f}" for v in s["per_seed"])
        lines.append(f"| {s['method']} | {','.join(map(str, s['seeds']))} | {per_seed} | {s['mean']:.1f} | "
                     f"{_fmt(s['se_seeds'])} | {_fmt(s['se_eval'])} | {_fmt(s['se'])} |")
    lines += ["", "SE (seeds) = sample std over seeds / sqrt(k); SE (eval set) = binomial SE on the pair videos "
              "(the same videos for every seed); SE = sqrt of the sum of their squares.", ""]
    if not verdicts:
        return "\n".join(lines + ["No (temporal, order-blind) pair of methods to compare."])
    lines += [f"### Verdict: temporal minus order-blind (criterion: >= {margin:g} points, mean over seeds)", "",
              f"| temporal | order-blind | difference | >= {margin:g} | outside noise |", "|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['temporal']} | {v['order_blind']} | {v['difference']:+.1f} | "
                     f"{'yes' if v['meets_margin'] else 'NO'} | {'yes' if v['outside_noise'] else 'no'} |")
    met = all(v["meets_margin"] for v in verdicts)
    lines += ["", f"Every temporal method beats every order-blind one by >= {margin:g} points: "
              f"**{'yes' if met else 'no'}** ({sum(v['meets_margin'] for v in verdicts)} of {len(verdicts)} pairs). "
              "Outside noise: |difference| > 2 sqrt(SE_a^2 + SE_b^2)."]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def order_pairs_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the bench prints and saves: per-run rows, the per-method summary over seeds,
    the verdicts (temporal / order-blind split from each method's contract), and the Markdown."""
    summary = summarize_seeds(rows)
    verdicts = order_verdicts(summary, list_methods(True), list_methods(False))
    markdown = format_rows(rows) + "\n\n" + format_summary(summary, verdicts) + "\n"
    return {"rows": rows, "summary": summary, "verdicts": verdicts, "margin": MARGIN, "markdown": markdown}
