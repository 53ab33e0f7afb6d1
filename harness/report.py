"""Summary tables from a results directory: per-split rows and the protocol's summary
(base / novel / HM for base-to-novel, top-1/top-5 elsewhere), as Markdown and CSV.

A row is exactly one configuration: jobs are grouped by their full identity minus split and
seed (`config_key`), and only splits and seeds are averaged within a group. Whatever differs
between the groups of a table is shown in the row label (method options) or a column (every
other setting); the header states the settings all rows share. Nothing is dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.reports import noise

# Identity and per-job rows live in harness.reports.rows (shared with the cross-run reports);
# re-exported here, where callers have always found them.
from harness.reports.rows import (  # noqa: F401
    NOT_CONFIG_KEYS,
    PER_METHOD_RECIPE,
    config_id,
    config_key,
    failures_markdown,
    fmt_params,
    job_rows,
    method_label,
    method_specific,
    to_markdown,
    varying_settings,
    vocabulary_cells,
    vocabulary_note,
)
from harness.reports.tables import base2novel_numbers, mean_cells


def recipe_lines(df: pd.DataFrame) -> list[str]:
    """Notes on optimiser recipes: which rows use a per-method (published) schedule, which methods
    fall back to their protocol-level default, and the recipe ingredients that were not applied."""
    lines = []
    if (df["schedule"] == PER_METHOD_RECIPE).any():
        lines.append(f"Rows marked '{PER_METHOD_RECIPE}' ran each method's published schedule (`--schedule paper`), "
                     "not the shared one: they are not an identical-protocol comparison.")
    fallback = sorted(set(df.loc[df["recipe_scope"] != "published", "method"]))
    if fallback and (df["profile"] == "embedded").all():
        lines.append("Profile `embedded`: lr per method from the fixed-budget search on the embedded dataset "
                     "(protocols/profiles.yaml, docs/embedded-benchmark.md); other options from the method defaults.")
    elif fallback:
        lines.append(f"No published recipe for `{df['dataset'].iloc[0]}`: {', '.join(fallback)} use their "
                     "protocol-level default (or option defaults) for lr / wd / method options.")
    skipped = sorted({(m, n) for m, n in zip(df["method"], df["not_applied"]) if n})
    for method, text in skipped:
        lines.append(f"{method}: recipe ingredients not applied by the engine: {text}.")
    return lines


def _setting_columns(g: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """The values of the settings that differ between the table's rows (shown as columns)."""
    settings = g["settings"].iloc[0]
    return {name: _cell(settings.get(name)) for name in columns}


def _cell(value: Any) -> Any:
    """A setting as a table cell: lists joined, None as '-', sha256 digests shortened to 12."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return "-" if value is None else value


def _columns(df: pd.DataFrame) -> list[str]:
    """Settings that differ between the configurations of `df`, except method options (which
    the method label shows)."""
    keys = [g["settings"].iloc[0] for _, g in df.groupby("config", sort=False)]
    _, varying = varying_settings(keys)
    return [k for k in varying if not method_specific(k)]


def base2novel_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: base/novel averaged over every (split, seed) run of it."""
    columns = _columns(df)
    out = []
    for _config, g in df.groupby("config", sort=False):
        built = base2novel_numbers(g)
        if built is None:
            continue
        numbers = built[0]
        first = g.iloc[0]
        out.append({
            "Method": first["method"], **_setting_columns(g, columns),
            "Trainable": int(first["trainable"]), "% of backbone": round(float(first["pct_of_backbone"] or 0.0), 2),
            **{name: numbers[name] for name in ("Base", "Base std", "Novel", "Novel std", "HM")},
            "HM std (splits)": numbers["HM std"],
            **{name: numbers[name] for name in ("Base se", "Novel se", "HM se")},
            **vocabulary_cells(g), "n": numbers["n"],
            "Splits": ",".join(map(str, sorted(set(g["split"])))), "Seeds": ",".join(map(str, sorted(set(g["seed"])))),
            "Select": ",".join(sorted(set(map(str, g["select"])))),
            "GMACs/view": first.get("gmacs_per_view"),
        })
    return noise.mark_table(pd.DataFrame(out), SUMMARY_METRICS)[0]


#: How a std column shows a row of one run (no spread is defined: `metrics.spread`).
STD_UNDEFINED = "-"
#: The accuracy columns of the run summary that carry a standard error (`<metric> se`).
SUMMARY_METRICS = ("Base", "Novel", "HM", "Top-1", "Top-5")


def generic_table(df: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """One row per (configuration, *by): top-1/top-5 averaged over its splits and seeds."""
    columns = [c for c in _columns(df) if c not in by]
    out = []
    for key, g in df.groupby(["config", *by], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        top1, top5 = mean_cells(g, "Top-1"), mean_cells(g, "Top-5", "top5")
        first = g.iloc[0]
        row = {"Method": first["method"], **_setting_columns(g, columns)}
        row.update({b: v for b, v in zip(by, key[1:])})
        row.update({"Trainable": int(first["trainable"]), "% of backbone": round(float(first["pct_of_backbone"] or 0.0), 2),
                    "Top-1": top1["Top-1"], "Top-1 std": top1["Top-1 std"], "Top-5": top5["Top-5"],
                    "Top-1 se": top1["Top-1 se"], "Top-5 se": top5["Top-5 se"], **vocabulary_cells(g),
                    "n": len(g),
                    "Seeds": ",".join(map(str, sorted(set(g["seed"])))),
                    "Views": first["views"], "GMACs/view": first.get("gmacs_per_view")})
        out.append(row)
    # rows of one eval set, target or K only are compared with each other
    return noise.mark_table(pd.DataFrame(out), SUMMARY_METRICS, by=by)[0]


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    protocol = df["protocol"].iloc[0]
    if protocol == "base2novel":
        return base2novel_table(df)
    if protocol == "few_shot":
        return generic_table(df, ("shots",))
    if protocol == "zero_shot":
        d = df.copy()
        d["target"] = d["eval"].str.split("/").str[0]
        return generic_table(d, ("target",))
    return generic_table(df, ("eval",))


#: Settings named first in a table's header (the rest follow alphabetically).
_HEADER_FIRST = ("protocol", "protocol_version", "protocol_hash", "dataset", "profile", "backbone", "pretrained",
                 "schedule.frames", "schedule.epochs", "schedule.views")


def header_lines(df: pd.DataFrame) -> list[str]:
    keys = [g["settings"].iloc[0] for _, g in df.groupby("config", sort=False)]
    shared, varying = varying_settings(keys)
    shown = {k: v for k, v in shared.items() if not method_specific(k)}
    order = [k for k in _HEADER_FIRST if k in shown] + sorted(k for k in shown if k not in _HEADER_FIRST)
    first = df.iloc[0]
    lines = ["Settings of every row: " + "; ".join(f"{k}={_cell(shown[k])}" for k in order) + "."]
    columns = [k for k in varying if not method_specific(k)]
    if columns:
        lines.append("Rows differ in: " + ", ".join(f"`{c}`" for c in columns) + " (columns); method options "
                     "that differ from the defaults are in the method label.")
    lines.append("Each row is one configuration; `n` = runs (splits x seeds) averaged, std = their sample std "
                 f"(ddof 1; `{STD_UNDEFINED}` for one run). "
                 + noise.SE_LEGEND + f" `{noise.MARK}`: within noise of the reference row (`zeroshot` when "
                 "present, else the first row of its eval set): |difference| <= 2 sqrt(SE_a^2 + SE_b^2).")
    profiles = sorted(set(df["profile"]) - {"-"})
    if profiles:
        lines.append(f"Profile {', '.join(f'`{p}`' for p in profiles)} shortens the schedule: numbers are NOT "
                     "comparable with papers.")
    if first["protocol"] == "base2novel":
        lines.append("HM = harmonic mean of the run-averaged base and novel top-1 (as the papers report); "
                     "'HM std (splits)' = std of the per-run HM. 'Select': `last` checkpoint, or `best_*` "
                     "on base validation (which is also the reported base test set, as upstream).")
    lines.extend(recipe_lines(df))
    lines.append("GMACs/view = multiply-adds of one clip through the video encoder (what papers call GFLOPs).")
    vocab = vocabulary_note(df)
    if vocab:
        lines.append(vocab)
    if df["missing"].sum():
        lines.append(f"Missing videos skipped: {int(df['missing'].sum())} (see per-job metrics).")
    return lines


def plot_ablations(df: pd.DataFrame, run_dir: Path) -> list[Path]:
    """For every setting swept in this run (`--sweep`), the headline metric (HM for base-to-novel,
    top-1 otherwise) against it, numeric values in numeric order and the default value included:
    `ablation_<option>.png` / `.pdf` (two swept settings: a heatmap `ablation_<a>_x_<b>`)."""
    from harness.reports.plots import ablation_plot, ablation_sets, ablation_stem

    ablations = ablation_sets(df)
    written = []
    for ablation in ablations:
        written += ablation_plot(ablation, ablation_stem(run_dir, ablation, len(ablations) > 1))
    return [p for p in written if p.suffix == ".png"]


def markdown_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table as shown in Markdown: parameters as `0.40M`, percentages with two decimals (the
    CSV keeps the numbers)."""
    shown = table.copy()
    for metric in SUMMARY_METRICS:
        if metric + noise.SE_SUFFIX in shown:
            shown[metric] = [_with_se(v, se, mark) for v, se, mark in
                             zip(shown[metric], shown[metric + noise.SE_SUFFIX],
                                 shown.get(metric + noise.NOISE_SUFFIX, [None] * len(shown)))]
    shown = shown.drop(columns=[c for c in shown.columns if c.endswith((noise.SE_SUFFIX, noise.NOISE_SUFFIX))])
    for column in [c for c in shown.columns if c.endswith(" std") or c == "HM std (splits)"]:
        shown[column] = [STD_UNDEFINED if v != v else v for v in shown[column]]  # one run: no spread
    if "Trainable" in shown:
        shown["Trainable"] = shown["Trainable"].map(fmt_params)
    if "% of backbone" in shown:
        shown["% of backbone"] = shown["% of backbone"].map(lambda v: f"{v:.2f}")
    return shown


def _with_se(value: float, se: float, within: object) -> str:
    """`48.6 (SE 2.04)`, with ` ≈` when within noise of the table's reference row."""
    text = str(value) if se != se else f"{value} (SE {se:.2f})"
    return f"{text} {noise.MARK}" if noise.is_marked(within) else text


def write_summary(run_dir: Path, records: list[dict[str, Any]],
                  failures: list[dict[str, Any]] | None = None) -> tuple[str, Path]:
    """Write summary.md / summary.csv (every table, with protocol and dataset columns; numbers
    as numbers) / per_job.csv (one row per job, every identity field); return the Markdown text
    and its path."""
    from harness.atomic import atomic_write_text

    df = job_rows(records)
    parts, tables = [], []
    if df.empty:
        parts.append("no finished jobs\n")
    else:
        for (protocol, dataset), g in df.groupby(["protocol", "dataset"], sort=False):
            table = summary_table(g)
            parts.append(f"## {protocol} / {dataset}\n\n" + "\n".join(header_lines(g)) + "\n\n"
                         + to_markdown(markdown_cells(table)) + "\n")
            tables.append(table.assign(Protocol=protocol, Dataset=dataset))
        combined = pd.concat(tables, ignore_index=True, sort=False)
        front = ["Protocol", "Dataset"]
        combined = combined[front + [c for c in combined.columns if c not in front]]
        atomic_write_text(run_dir / "summary.csv", combined.to_csv(index=False))
        from harness.reports.aggregate import per_job_frame

        atomic_write_text(run_dir / "per_job.csv", per_job_frame(records).to_csv(index=False))
        plots = plot_ablations(df, run_dir)
        if plots:
            parts.append("Ablation plots: " + ", ".join(p.name for p in plots) + "\n")
    if failures:
        parts.append(failures_markdown(failures))
    text = "\n".join(parts)
    path = run_dir / "summary.md"
    atomic_write_text(path, text)
    return text, path
