"""The papers' table layouts, from the frame of `aggregate.eval_frame`:

- base-to-novel: one block per dataset (Base / Novel / HM, mean over splits and seeds, std when
  n > 1) and an average-over-datasets block (HM of the averaged Base and Novel, as ViFi-CLIP);
- few-shot: `<dataset> K=<k>` columns;
- zero-shot: one column per evaluated target (mean and std over its evaluation splits);
- fully supervised: top-1 / top-5, frames x views, GMACs per view and x views.

A row is one configuration on every dataset of its table: its identity (`config_key`) minus the
dataset and what legitimately follows from it (per-dataset views and recipes). Two
configurations that still coincide on that key within one dataset are kept apart by their
config id, so nothing is ever averaged across configurations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.jobs.identity import short_hash
from harness.metrics import harmonic_mean, harmonic_mean_standard_error, mean_std
from harness.reports import noise
from harness.reports.rows import (
    VOCAB_COLUMNS,
    method_specific,
    varying_settings,
    vocabulary_cells,
    vocabulary_note,
)

#: Dataset order of the papers' tables (others follow alphabetically).
DATASET_ORDER = ("k400", "hmdb51", "ucf101", "ssv2", "k600", "embedded")


def ordered(names: Any) -> list[str]:
    """Distinct dataset names in the papers' order."""
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: (DATASET_ORDER.index(n) if n in DATASET_ORDER else len(DATASET_ORDER), n))


#: Settings that may differ per dataset within one row of a cross-dataset table.
PER_DATASET_KEYS = ("dataset", "schedule.views", "shots")


@dataclass
class ReportTable:
    """One table: `frame` holds numbers as numbers (a `<metric> std` column next to each metric,
    NaN where n = 1, its standard error `<metric> se` and, once `noise.mark_table` ran,
    `<metric> within_noise`), a `Quoted` flag column and a `Source` column for published rows."""

    slug: str
    title: str
    frame: pd.DataFrame
    metrics: list[str]
    headline: str | None = None
    notes: list[str] = field(default_factory=list)
    protocol: str = ""
    dataset: str | None = None  # None: the table spans datasets (few-shot, average block)

    def column_for(self, dataset: str, metric: str) -> str | None:
        """The column a published number (dataset, metric) belongs in, if this table has it."""
        if self.protocol == "few_shot":
            name = f"{dataset} {metric}"
        elif dataset == self.dataset or (self.protocol == "zero_shot" and dataset in (self.dataset or "").split(",")):
            name = metric
        else:
            return None
        return name if name in self.metrics else None


def _row_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in PER_DATASET_KEYS and not method_specific(k)}


def assign_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add a `row` column (the table row a job belongs to) and return the settings shown as
    columns because they differ between rows."""
    df = df.copy()
    keys = {cfg: _row_settings(s) for cfg, s in zip(df["config"], df["settings"])}
    df["row"] = [short_hash({"method": m, **keys[c]}, 10) for m, c in zip(df["method"], df["config"])]
    # a row holds one configuration per dataset (and per K): otherwise split it by config id
    clash = df.groupby(["row", "dataset", "shots"], dropna=False)["config"].transform("nunique") > 1
    df.loc[clash, "row"] = df.loc[clash, "row"] + "-" + df.loc[clash, "config"]
    df.loc[clash, "method"] = df.loc[clash, "method"] + " [" + df.loc[clash, "config"] + "]"
    _, varying = varying_settings(_unique(list(keys.values())))
    return df, varying


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        out.setdefault(short_hash(item, 10), item)
    return list(out.values())


def _identity(g: pd.DataFrame, varying: list[str]) -> dict[str, Any]:
    """Method, the differing settings, trainable parameters: the columns every layout starts with."""
    first = g.iloc[0]
    settings = first["settings"]
    match = {"method": first["method"], "backbone": first["backbone"], "pretrained": first["pretrained"],
             "frames": int(first["frames"]), "profile": first["profile"]}
    return {"Method": first["method"], **{name: _cell(settings.get(name)) for name in varying},
            "Trainable": int(first["trainable"]), "% of backbone": float(first["pct_of_backbone"] or 0.0),
            "_match": match}


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "-" if value is None else value


def _flags(g: pd.DataFrame) -> str:
    return ", ".join(sorted({f for flags in g["flags"] for f in flags}))


def _round(value: float) -> float:
    return float(round(value, 2)) if value == value else float("nan")


def base2novel_numbers(g: pd.DataFrame) -> tuple[dict[str, Any], tuple[float, float, float, float]] | None:
    """The one builder of a base-to-novel row's numbers, for the run summary (harness/report.py)
    and the papers' tables alike: Base / Novel / HM (HM of the run-averaged base and novel), each
    with its spread over the runs (`metrics.spread`: sample std, NaN for one run) and standard
    error, and `n` runs; plus the unrounded (base, novel, se base, se novel) for averages over
    datasets. None when no run of `g` has both evaluations."""
    cells = noise.base2novel_cells(g)
    if cells is None:
        return None
    summ, se_b, se_n, n_runs = cells
    numbers = {"Base": _round(summ["base"]), "Base std": _round(summ["base_std"]), "Base se": _round(se_b),
               "Novel": _round(summ["novel"]), "Novel std": _round(summ["novel_std"]), "Novel se": _round(se_n),
               "HM": _round(summ["hm"]), "HM std": _round(summ["hm_split_std"]),
               "HM se": _round(harmonic_mean_standard_error(summ["base"], se_b, summ["novel"], se_n)), "n": n_runs}
    return numbers, (summ["base"], summ["novel"], se_b, se_n)


def base2novel_tables(df: pd.DataFrame, varying: list[str]) -> list[ReportTable]:
    """One block per dataset, then the average over datasets (rows present on all of them)."""
    blocks, per_row = [], {}
    datasets = ordered(df["dataset"])
    for dataset in datasets:
        rows = []
        for row_id, g in df[df["dataset"] == dataset].groupby("row", sort=False):
            built = base2novel_numbers(g)
            if built is None:
                continue
            numbers, (base, novel, se_b, se_n) = built
            n_runs = numbers.pop("n")
            row = {**_identity(g, varying), **numbers, **vocabulary_cells(g), "n": n_runs, "Flags": _flags(g)}
            rows.append(row)
            per_row.setdefault(row_id, {})[dataset] = (row, base, novel, se_b, se_n)
        blocks.append(ReportTable(f"base2novel-{dataset}", f"Base-to-novel: {dataset}", _frame(rows),
                                  ["Base", "Novel", "HM"], "HM", protocol="base2novel", dataset=dataset))
    if len(datasets) > 1:
        rows = []
        for found in per_row.values():
            if len(found) < len(datasets):
                continue
            first = next(iter(found.values()))[0]
            base = float(np.mean([b for _, b, _, _, _ in found.values()]))
            novel = float(np.mean([n for _, _, n, _, _ in found.values()]))
            se_b = noise.average_standard_error([s for *_, s, _ in found.values()])
            se_n = noise.average_standard_error([s for *_, s in found.values()])
            ident = {k: v for k, v in first.items() if k in ("Method", "Trainable", "% of backbone") or k in varying}
            ident["_match"] = None  # an average is never compared with a published number
            rows.append({**ident, "Base": _round(base), "Base std": np.nan, "Base se": _round(se_b),
                         "Novel": _round(novel), "Novel std": np.nan, "Novel se": _round(se_n),
                         "HM": _round(harmonic_mean(base, novel)), "HM std": np.nan,
                         "HM se": _round(harmonic_mean_standard_error(base, se_b, novel, se_n)),
                         "n": len(found), "Flags": ", ".join(sorted({f for r, *_ in found.values()
                                                                       for f in r["Flags"].split(", ") if f}))})
        if not rows:  # no row on every dataset: no average block (an empty one has no columns to render)
            return blocks
        blocks.append(ReportTable("base2novel-average", f"Base-to-novel: average over {', '.join(datasets)}",
                                  _frame(rows), ["Base", "Novel", "HM"], "HM",
                                  ["Average block: Base and Novel averaged over the datasets, HM of those "
                                   "averages; `n` = datasets. Rows missing a dataset are left out."],
                                  protocol="base2novel"))
    return blocks


def mean_cells(g: pd.DataFrame, column: str, source: str = "top1") -> dict[str, Any]:
    """`column`, `column std` (`metrics.spread`) and `column se` (noise.cell_standard_error) over
    the runs (split, seed) of `g`, one row per run and evaluation (so zero-shot's three evaluation
    splits count as three runs): the one builder of top-1 / top-5 cells (summary and report)."""
    mean, std = mean_std([float(v) for v in g[source]])
    return {column: _round(mean), f"{column} std": _round(std),
            f"{column}{noise.SE_SUFFIX}": _round(noise.cell_standard_error(g, source))}


def few_shot_table(df: pd.DataFrame, varying: list[str]) -> ReportTable:
    metrics = [f"{ds} K={int(k)}" for ds in ordered(df["dataset"])
               for k in sorted(df.loc[df["dataset"] == ds, "shots"].dropna().unique())]
    rows = []
    for _row_id, g in df.groupby("row", sort=False):
        row = _identity(g, varying)
        for (ds, k), s in g.groupby(["dataset", "shots"]):
            row.update(mean_cells(s, f"{ds} K={int(k)}"))
        rows.append({**row, **vocabulary_cells(g), "n": int(g.groupby(["split", "seed", "shots"]).ngroups),
                     "Flags": _flags(g)})
    return ReportTable("few_shot", "Few-shot top-1 (K shots per class)", _frame(rows, metrics), metrics,
                       metrics[-1] if metrics else None, protocol="few_shot")


def zero_shot_table(df: pd.DataFrame, varying: list[str]) -> ReportTable:
    df = df.assign(target=df["eval"].str.split("/").str[0])
    metrics = ordered(df["target"])
    rows = []
    for _row_id, g in df.groupby("row", sort=False):
        row = _identity(g, varying)
        for target, s in g.groupby("target", sort=False):
            row.update(mean_cells(s, target))
        rows.append({**row, "Trained on": ",".join(dict.fromkeys(g["dataset"])), **vocabulary_cells(g),
                     "n": int(g.groupby(["split", "seed"]).ngroups),
                     "Flags": _flags(g)})
    return ReportTable("zero_shot", "Zero-shot top-1 (mean ± std over the evaluation splits)",
                       _frame(rows, metrics), metrics, metrics[0] if metrics else None, protocol="zero_shot",
                       dataset=",".join(dict.fromkeys(df["dataset"])))


def fully_supervised_tables(df: pd.DataFrame, varying: list[str]) -> list[ReportTable]:
    out = []
    for dataset in ordered(df["dataset"]):
        rows = []
        for (_row_id, eval_name), g in df[df["dataset"] == dataset].groupby(["row", "eval"], sort=False):
            first = g.iloc[0]
            clips, crops = (int(x) for x in str(first["views"]).split("x"))
            gmacs = first.get("gmacs_per_view")
            row = {**_identity(g, varying), "Eval": eval_name,
                   "Frames x views": f"{int(first['frames'])}x{clips}x{crops}"}
            row.update(mean_cells(g, "Top-1"))
            row.update(mean_cells(g, "Top-5", "top5"))
            row.update({"GMACs/view": gmacs, "GMACs x views": _round(gmacs * clips * crops) if gmacs == gmacs and gmacs is not None else np.nan,
                        **vocabulary_cells(g), "n": len(g), "Flags": _flags(g)})
            rows.append(row)
        out.append(ReportTable(f"fully_supervised-{dataset}", f"Fully supervised: {dataset}", _frame(rows),
                               ["Top-1", "Top-5"], "Top-1",
                               ["GMACs = multiply-adds of one clip through the video encoder (the papers' "
                                "\"GFLOPs\"); x views = per view times clips x crops."],
                               protocol="fully_supervised", dataset=dataset))
    return out


def _frame(rows: list[dict[str, Any]], metrics: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if metrics:  # wide layouts: every metric column present, in order, even if a row lacks it
        for m in metrics:
            for col in (m, f"{m} std", f"{m}{noise.SE_SUFFIX}"):
                if col not in frame:
                    frame[col] = np.nan
        tail = (*VOCAB_COLUMNS, "n", "Flags")
        fixed = [c for c in frame.columns if c not in metrics and not c.endswith((" std", noise.SE_SUFFIX))
                 and c not in tail]
        ordered = [c for m in metrics for c in (m, f"{m} std", f"{m}{noise.SE_SUFFIX}")]
        frame = frame[fixed + ordered + [c for c in tail if c in frame]]
    frame.insert(0, "Quoted", False)
    frame["Source"] = ""
    return frame


def build_tables(df: pd.DataFrame) -> list[ReportTable]:
    """Every table for the jobs of `df` (one or several protocols), in protocol order."""
    tables: list[ReportTable] = []
    for protocol in ("base2novel", "few_shot", "zero_shot", "fully_supervised"):
        part = df[df["protocol"] == protocol]
        if part.empty:
            continue
        part, varying = assign_rows(part)
        if protocol == "base2novel":
            tables += base2novel_tables(part, varying)
        elif protocol == "few_shot":
            tables.append(few_shot_table(part, varying))
        elif protocol == "zero_shot":
            tables.append(zero_shot_table(part, varying))
        else:
            tables += fully_supervised_tables(part, varying)
        shared, _ = varying_settings(_unique([_row_settings(s) for s in part["settings"]]))
        note = "Settings of every row: " + "; ".join(f"{k}={_cell(v)}" for k, v in sorted(shared.items())
                                                      if k in _SHOWN_SHARED) + "."
        vocab = vocabulary_note(part)
        for table in tables:
            if table.slug.startswith(protocol) and note not in table.notes:
                table.notes.insert(0, note)
                if vocab and any(c in table.frame for c in VOCAB_COLUMNS):
                    table.notes.append(vocab)
    for table in tables:
        table.frame, noise_note = noise.mark_table(table.frame, table.metrics, by=("Eval",))
        if noise_note and noise_note not in table.notes:
            table.notes.append(noise_note)
    return tables


#: Shared settings named in a table's note (the full list is in per_job.csv).
_SHOWN_SHARED = ("protocol", "protocol_hash", "profile", "backbone", "pretrained", "schedule.frames",
                 "schedule.epochs", "schedule.select")
