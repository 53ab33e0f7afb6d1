"""The reproduction table: per cell (method, dataset, metric) the measured value, the published
one, their difference, the measured value's standard error and a verdict.

Verdicts (docs/reproduce.md):
* `reproduced`: |measured - published| <= the suite's tolerance (default 1.0 point);
* `outside tolerance`: further apart;
* `not run`: the cell's jobs have not all finished (or could not be planned); the note says why;
* `not comparable: <why>`: the published number was obtained under another setting than the
  runs (backbone, weights, frames, or frames not stated where quoted), or there is none.
The standard error is eval-set sampling noise (harness/reports/noise.py: binomial per run,
combined over the runs averaged; HM's by the delta method), so a reader can see when the
tolerance is finer than what the eval set resolves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.reproduce.plan import SuitePlan

REPRODUCED, OUTSIDE, NOT_RUN, NOT_COMPARABLE = "reproduced", "outside tolerance", "not run", "not comparable"


@dataclass
class Cell:
    method: str
    dataset: str
    metric: str
    measured: float | None
    se: float | None
    published: float | None
    verdict: str
    note: str = ""
    source: str = ""

    @property
    def difference(self) -> float | None:
        if self.measured is None or self.published is None:
            return None
        return self.measured - self.published


def metrics_for(plan: SuitePlan, dataset: str) -> list[str]:
    """The table's columns for one dataset of the suite's protocol."""
    from protocols import load_protocol

    protocol = load_protocol(plan.suite.protocol)
    if plan.suite.protocol == "base2novel":
        return ["Base", "Novel", "HM"]
    if plan.suite.protocol == "few_shot":
        return [f"K={k}" for k in (plan.suite.shots or protocol["shots"])]
    if plan.suite.protocol == "zero_shot":
        return list(protocol["targets"].get(dataset, []))
    return ["Top-1"]


def build_cells(plan: SuitePlan, published: list[dict[str, Any]]) -> list[Cell]:
    from harness.reproduce.plan import Group

    cells = []
    for group in plan.groups:
        assert isinstance(group, Group)
        records = _records(group)
        for metric in metrics_for(plan, group.dataset):
            pub, why = _published(plan, group, metric, published)
            measured, se, missing = _measure(plan, group, metric, records)
            cell = Cell(group.method, group.dataset, metric, measured, se, pub["value"] if pub else None, "",
                        source=pub["source"] if pub else "")
            if why:
                cell.verdict = f"{NOT_COMPARABLE}: {why}"
            elif missing:
                cell.verdict, cell.note = NOT_RUN, missing
            elif abs(measured - cell.published) <= plan.suite.tolerance + 1e-9:
                cell.verdict = REPRODUCED
            else:
                cell.verdict = OUTSIDE
            if cell.verdict.startswith(NOT_COMPARABLE) and missing:
                cell.note = missing
            cells.append(cell)
    return cells


def _records(group: Any) -> dict[str, dict[str, Any]]:
    """Finished results of the group's jobs, by job id."""
    from harness.store import RunStore, read_result

    store = RunStore(group.out)
    out = {}
    for job in group.jobs:
        if store.is_finished(job):
            out[job.job_id] = read_result(store.job_dir(job) / "metrics.json")
    return out


def _published(plan: SuitePlan, group: Any, metric: str,
               published: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The quoted row of this cell, and why it is not comparable with the runs (None if it is)."""
    suite = plan.suite
    source = suite.source_for(group.method)
    rows = [p for p in published if p["protocol"] == suite.protocol and p["dataset"] == group.dataset
            and p["method"] == group.method and p["metric"] == metric
            and (source is None or p["source"] == source)]
    if not rows:
        return None, f"no published number in the quoted-rows file ({suite.protocol}, {group.dataset}, " \
                     f"{group.method}, {metric}" + (f", source {source!r}" if source else "") + ")"
    job = group.jobs[0] if group.jobs else None
    runs = {"backbone": suite.published_backbone or suite.backbone, "pretrained": _weights_name(group.request, suite),
            "frames": job.schedule.frames if job else suite.frames_for(group.method, group.dataset)}
    best = next((p for p in rows if p["backbone"] == runs["backbone"] and p["pretrained"] == runs["pretrained"]
                 and p["frames"] == runs["frames"]), rows[0])
    if best["backbone"] != runs["backbone"]:
        return best, f"published on {best['backbone']}, runs on {runs['backbone']}"
    if best["pretrained"] != runs["pretrained"]:
        return best, f"published from {best['pretrained']} weights, runs from {runs['pretrained']}"
    if best["frames"] is None:
        return best, "frames not stated where quoted"
    if runs["frames"] is not None and best["frames"] != runs["frames"]:
        return best, f"published with {best['frames']} frames, runs use {runs['frames']}"
    return best, None


def _weights_name(request: Any, suite: Any) -> str:
    """The `pretrained` column value of the runs' weights (published.csv's vocabulary)."""
    if suite.needs_weights_file:
        return str(suite.pretrained.get("published_as", "file"))
    return str(suite.pretrained)


def _measure(plan: SuitePlan, group: Any, metric: str,
             records: dict[str, dict[str, Any]]) -> tuple[float | None, float | None, str]:
    """(value, its SE, why not measured) of one cell from its jobs' results."""
    from harness.metrics import harmonic_mean_standard_error
    from harness.reports import noise
    from harness.reports.rows import job_rows

    if group.problem:
        return None, None, f"not planned: {group.problem}"
    jobs = group.jobs
    if plan.suite.protocol == "few_shot":
        jobs = [j for j in jobs if f"K={j.shots}" == metric]
    done = [records[j.job_id] for j in jobs if j.job_id in records]
    if not jobs:
        return None, None, "no job"
    if len(done) < len(jobs):
        return None, None, f"{len(done)} of {len(jobs)} job(s) finished"
    rows = job_rows(done)
    protocol = plan.suite.protocol
    if protocol == "base2novel":
        found = noise.base2novel_cells(rows)
        if found is None:
            return None, None, "no base and novel evaluation"
        summary, se_b, se_n, _ = found
        value = {"Base": summary["base"], "Novel": summary["novel"], "HM": summary["hm"]}[metric]
        se = {"Base": se_b, "Novel": se_n,
              "HM": harmonic_mean_standard_error(summary["base"], se_b, summary["novel"], se_n)}[metric]
        return float(value), _finite(se), ""
    if protocol == "zero_shot":
        part = rows[rows["eval"].str.split("/").str[0] == metric]
    elif protocol == "fully_supervised":
        part = rows[~rows["eval"].str.contains("@")]  # the multi-view number, not the 1x1 companion
    else:
        part = rows
    if part.empty:
        return None, None, f"no evaluation for {metric}"
    return float(part["top1"].mean()), _finite(noise.cell_standard_error(part)), ""


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def gpu_hours_spent(plan: SuitePlan) -> tuple[float, float, int]:
    """(GPU-hours, wall hours, finished jobs) of the suite's finished jobs (metrics.accounting)."""
    gpu = wall = 0.0
    count = 0
    for group in plan.groups:
        for record in _records(group).values():
            acc = record["metrics"].get("accounting") or {}
            gpu += float(acc.get("gpu_hours") or 0.0)
            wall += float(acc.get("wall_seconds") or 0.0) / 3600.0
            count += 1
    return gpu, wall, count


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def to_markdown(plan: SuitePlan, cells: list[Cell]) -> str:
    """One block per dataset (as the papers lay out their tables): rows = methods, a group of
    columns per metric: measured, published, difference, SE, verdict."""
    suite = plan.suite
    gpu, wall, count = gpu_hours_spent(plan)
    counts = pd.Series([c.verdict.split(":")[0] for c in cells]).value_counts().to_dict() if cells else {}
    lines = [f"# Reproduction: {suite.title}", "",
             f"Suite `{suite.name}` ({suite.path}); source: {suite.source_text()}.",
             f"Protocol {suite.protocol}, schedule {suite.schedule}"
             + (f", profile {suite.profile} (shortened: not the published schedule)" if suite.profile else "")
             + f"; tolerance ±{suite.tolerance:g} point(s): `reproduced` when |measured - published| <= "
               f"{suite.tolerance:g}.",
             "Verdicts: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".",
             f"GPU-hours spent: {gpu:.2f} over {count} finished job(s) (wall {wall:.2f} h; jobs on CPU count 0 "
             "GPU-hours).", "",
             "SE = standard error of the measured value from eval-set sampling (binomial per run, combined over the "
             "runs averaged; HM by the delta method). Δ = measured - published.", ""]
    for note in suite.notes + plan.notes:
        lines.append(f"Note: {note}")
    for dataset in suite.datasets:
        part = [c for c in cells if c.dataset == dataset]
        if not part:
            continue
        metrics = list(dict.fromkeys(c.metric for c in part))
        lines += ["", f"## {suite.protocol}: {dataset}", ""]
        header = ["Method"] + [f"{m} {what}" for m in metrics for what in ("measured", "published", "Δ", "SE", "verdict")]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for method in suite.methods:
            row = [method]
            for metric in metrics:
                cell = next((c for c in part if c.method == method and c.metric == metric), None)
                if cell is None:
                    row += ["-"] * 5
                    continue
                verdict = cell.verdict + (f" ({cell.note})" if cell.note else "")
                row += [_fmt(cell.measured), _fmt(cell.published), _fmt(cell.difference, signed=True), _fmt(cell.se),
                        verdict]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def to_frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell, numbers as numbers (the CSV)."""
    return pd.DataFrame([{"method": c.method, "dataset": c.dataset, "metric": c.metric, "measured": c.measured,
                          "published": c.published, "difference": c.difference, "se": c.se, "verdict": c.verdict,
                          "note": c.note, "source": c.source} for c in cells])
