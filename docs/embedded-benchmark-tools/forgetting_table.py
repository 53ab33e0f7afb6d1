"""Forgetting on the embedded benchmark, with its noise: the pretraining-vocabulary accuracy before /
after training (`metrics.vocabulary`, harness/engine/forgetting.py) per method over the runs of one
results folder, and whether two methods' forgetting differs by more than the noise.

Noise, the convention of the order-pair tables (docs/embedded-benchmark.md section 3.2):
* SE (runs) = sample std over the runs (splits) / sqrt(k);
* SE (eval set) = the binomial SE of one measurement, stratified over the vocabulary's tasks
  (sqrt(sum_t p_t (1 - p_t) / n_t) / tasks), averaged over the runs: every run scores the same 360
  frames, so averaging runs does not shrink it (`run_average_standard_error` with one group);
  for the change (after - before) the before and after SEs add in quadrature, which over-states
  it (both are measured on the same frames, so their errors are positively correlated): the
  change's noise bound is conservative;
* SE = sqrt(SE (runs)^2 + SE (eval set)^2); a difference is outside noise when
  |a - b| > 2 sqrt(SE_a^2 + SE_b^2) (`harness.metrics.within_noise`).

Usage: python docs/embedded-benchmark-tools/forgetting_table.py RESULTS_DIR [RESULTS_DIR ...] [A,B,C]
(the optional list: the rows compared pairwise, default msta,froster,mote; a method that appears at
more than one lr is labelled `method[lr=x]`, e.g. `msta[lr=0.003]`).
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

from harness.metrics import mean_standard_error, run_average_standard_error, within_noise


def measurement_se(measurement: dict) -> float:
    """Binomial SE (points) of one vocabulary measurement's mean over tasks, stratified by task."""
    tasks = measurement["tasks"]
    n = measurement["per_task"]
    var = sum((p / 100.0) * (1.0 - p / 100.0) / n for p in tasks.values())
    return 100.0 * math.sqrt(var) / len(tasks)


def runs(run_dirs: list[Path]) -> dict[str, list[dict]]:
    """row label -> its runs' {before, after, change, se_before, se_after, split}. The label is the
    method, or `method[lr=x]` when the folders hold the method at more than one lr (an lr sweep)."""
    records = [json.loads(f.read_text()) for d in run_dirs for f in sorted(d.glob("jobs/*/metrics.json"))]
    lrs: dict[str, set] = {}
    for record in records:
        lrs.setdefault(record["job"]["method"], set()).add(record["job"]["method_options"].get("lr"))
    out: dict[str, list[dict]] = {}
    for record in records:
        vocab = record["metrics"].get("vocabulary")
        if not vocab:
            continue
        before, after = vocab["before"], vocab["after"]
        method, lr = record["job"]["method"], record["job"]["method_options"].get("lr")
        label = method if len(lrs[method]) == 1 else f"{method}[lr={lr:g}]"
        out.setdefault(label, []).append({
            "split": record["job"].get("split"), "before": before["mean"], "after": after["mean"],
            "change": after["mean"] - before["mean"],
            "se_before": measurement_se(before), "se_after": measurement_se(after)})
    return out


def summary(rs: list[dict], key: str) -> tuple[float, float, float, float]:
    """(mean, SE runs, SE eval set, SE) of `key` over the runs."""
    mean, se_runs = mean_standard_error([r[key] for r in rs])
    if key == "change":
        per_run = [math.hypot(r["se_before"], r["se_after"]) for r in rs]
    else:
        per_run = [r[f"se_{key}"] for r in rs]
    se_eval = run_average_standard_error(per_run, [0] * len(per_run))
    se_runs = 0.0 if math.isnan(se_runs) else se_runs
    return mean, se_runs, se_eval, math.hypot(se_runs, se_eval)


def main(run_dirs: list[str], compared: list[str]) -> None:
    table = runs([Path(d) for d in run_dirs])
    print("| method | runs | before | after (per run) | after | change (per run) | change | SE (runs) | SE (eval set) | SE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, rs in sorted(table.items()):
        rs = sorted(rs, key=lambda r: r["split"] or 0)
        b = summary(rs, "before")
        a = summary(rs, "after")
        c = summary(rs, "change")
        afters = ", ".join(f"{r['after']:.1f}" for r in rs)
        changes = ", ".join(f"{r['change']:+.1f}" for r in rs)
        print(f"| {method} | {len(rs)} | {b[0]:.1f} | {afters} | "
              f"{a[0]:.1f} ± {a[3]:.1f} | {changes} | {c[0]:+.1f} | "
              f"{c[1]:.1f} | {c[2]:.1f} | {c[3]:.1f} |")
    print()
    print("| A | B | change A - B | 2 x combined SE | outside noise | after A - B | 2 x combined SE | outside noise |")
    print("|---|---|---|---|---|---|---|---|")
    for x, y in itertools.combinations([m for m in compared if m in table], 2):
        cx, cy = summary(table[x], "change"), summary(table[y], "change")
        ax, ay = summary(table[x], "after"), summary(table[y], "after")
        dc, da = cx[0] - cy[0], ax[0] - ay[0]
        print(f"| {x} | {y} | {dc:+.1f} | {2 * math.hypot(cx[3], cy[3]):.1f} | "
              f"{'no' if within_noise(cx[0], cx[3], cy[0], cy[3]) else 'yes'} | {da:+.1f} | "
              f"{2 * math.hypot(ax[3], ay[3]):.1f} | {'no' if within_noise(ax[0], ax[3], ay[0], ay[3]) else 'yes'} |")


if __name__ == "__main__":
    folders = [a for a in sys.argv[1:] if Path(a).is_dir()]
    rows = [a for a in sys.argv[1:] if not Path(a).is_dir()]
    main(folders, (rows[0] if rows else "msta,froster,mote").split(","))
