"""Summary tables from a results directory: per-split rows and the protocol's summary
(base / novel / HM for base-to-novel, top-1/top-5 elsewhere), as Markdown and CSV.

A row is exactly one configuration: jobs are grouped by their full identity minus split and
seed (`config_key`), and only splits and seeds are averaged within a group. Whatever differs
between the groups of a table is shown in the row label (method options) or a column (every
other setting); the header states the settings all rows share. Nothing is dropped.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from harness.engine.accounting import accounting_columns
from harness.jobs import EXECUTION_ONLY_DATA_KEYS, EXECUTION_ONLY_KEYS, short_hash
from harness.metrics import base2novel_summary, mean_std

PER_METHOD_RECIPE = "per-method recipe"
EVALUATED_CHECKPOINT = "evaluated checkpoint"  # `harness eval` rows: no training in this run

#: Job fields that are not part of a row's configuration: the two averaged over (split, seed),
#: what follows from the split (its files, class lists, descriptions), what follows from the
#: protocol, and bookkeeping.
NOT_CONFIG_KEYS = ("split", "seed", "train", "evals", "file_provenance", "descriptions", "select_on",
                   "closed_set", "summary", "splits_root", "cache_dir", "job_id", "results_format")


def config_key(job: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a row: the job's identity minus split and seed, flattened to
    dotted keys (`schedule.frames`, `method_options.lr`, `weights.sha256`, ...). Reusable by any
    table that must not mix configurations."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    for key, value in job.items():
        if key in NOT_CONFIG_KEYS:
            continue
        if key == "schedule":
            value = {k: v for k, v in value.items() if k not in EXECUTION_ONLY_KEYS}
        if key == "data":
            value = {k: v for k, v in value.items() if k not in EXECUTION_ONLY_DATA_KEYS}
        walk(key, value)
    return flat


def config_id(job: dict[str, Any]) -> str:
    """A short hash of `config_key`: equal for jobs that differ only in split and seed."""
    return short_hash(config_key(job), 10)


def varying_settings(keys: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(settings shared by every configuration, names of the settings that differ between them)."""
    names = sorted({k for key in keys for k in key})
    shared, varying = {}, []
    for name in names:
        values = {repr(key.get(name)) for key in keys}
        if len(values) == 1:
            shared[name] = keys[0].get(name)
        else:
            varying.append(name)
    return shared, varying


def method_label(job: dict[str, Any]) -> str:
    """`msta` or `msta[rank=64,alpha=2.0]`: the method plus the options that differ from its
    defaults and from its recipe; ` (per-method recipe)` when the run used `--schedule paper`."""
    from methods.registry import make_config

    recipe = job.get("recipe") or {}
    suffix = f" ({PER_METHOD_RECIPE})" if recipe.get("schedule_kind") == "paper" else ""
    suffix += f" ({EVALUATED_CHECKPOINT})" if job.get("checkpoint") else ""
    try:
        defaults = make_config(job["method"]).to_dict()
    except Exception:  # a method removed since the run: show the raw name
        return job["method"] + suffix
    defaults.update(recipe.get("method_options") or {})
    diff = {k: v for k, v in job["method_options"].items() if defaults.get(k) != v}
    if not diff:
        return job["method"] + suffix
    return job["method"] + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]" + suffix


def job_rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        job, metrics = rec["job"], rec["metrics"]
        key = config_key(job)
        for eval_name, ev in metrics["evals"].items():
            rows.append({
                "config": config_id(job), "settings": key, "method": method_label(job), "split": job["split"], "shots": job.get("shots"), "seed": job["seed"],
                "eval": eval_name, "top1": ev.get("top1"), "top5": ev.get("top5"), "n": ev.get("n"),
                "classes": ev.get("classes"), "views": "x".join(map(str, ev.get("views", [1, 1]))),
                "trainable": metrics["params"]["trainable"], "total": metrics["params"]["total"],
                "pct_of_backbone": metrics["params"].get("pct_of_backbone"),
                "gmacs_per_view": (metrics.get("flops_per_view") or {}).get("gmacs"),
                "select": metrics["train"].get("selected", job["schedule"]["select"]),
                "frames": job["schedule"]["frames"], "epochs": job["schedule"]["epochs"],
                "profile": job.get("profile") or "-", "protocol": job["protocol"], "protocol_hash": job["protocol_hash"],
                "dataset": job["dataset"], "backbone": job["backbone"], "pretrained": job.get("pretrained") or "random",
                "job_id": rec["job_id"], "missing": (ev.get("videos") or {}).get("missing", 0),
                "git_sha": (rec.get("provenance", {}).get("code") or {}).get("git_sha"),
                **_recipe_columns(job), **accounting_columns(metrics),
            })
    return pd.DataFrame(rows)


def _recipe_columns(job: dict[str, Any]) -> dict[str, Any]:
    """Which schedule and recipe a job ran with (harness.recipes), for the tables' notes."""
    recipe = job.get("recipe") or {}
    not_applied = recipe.get("not_applied") or {}
    return {"schedule": PER_METHOD_RECIPE if recipe.get("schedule_kind") == "paper" else "shared",
            "recipe_scope": recipe.get("scope", "method default"),
            "lr": job["method_options"].get("lr"), "weight_decay": job["method_options"].get("weight_decay"),
            "not_applied": ", ".join(f"{k}={v}" for k, v in sorted(not_applied.items()))}


def recipe_lines(df: pd.DataFrame) -> list[str]:
    """Notes on optimiser recipes: which rows use a per-method (published) schedule, which methods
    fall back to their protocol-level default, and the recipe ingredients that were not applied."""
    lines = []
    if (df["schedule"] == PER_METHOD_RECIPE).any():
        lines.append(f"Rows marked '{PER_METHOD_RECIPE}' ran each method's published schedule (`--schedule paper`), "
                     "not the shared one: they are not an identical-protocol comparison.")
    fallback = sorted(set(df.loc[df["recipe_scope"] != "published", "method"]))
    if fallback:
        lines.append(f"No published recipe for `{df['dataset'].iloc[0]}`: {', '.join(fallback)} use their "
                     "protocol-level default (or option defaults) for lr / wd / method options.")
    skipped = sorted({(m, n) for m, n in zip(df["method"], df["not_applied"]) if n})
    for method, text in skipped:
        lines.append(f"{method}: recipe ingredients not applied by the engine: {text}.")
    return lines


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' own needs the `tabulate` package)."""
    cols = list(df.columns)
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


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
    return [k for k in varying if not _method_specific(k)]


def _method_specific(key: str) -> bool:
    """Settings a method label or the recipe notes already show (they differ per method by design)."""
    return key == "method" or key.startswith(("method_options.", "recipe."))


def base2novel_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: base/novel averaged over every (split, seed) run of it."""
    columns = _columns(df)
    out = []
    for _config, g in df.groupby("config", sort=False):
        pairs = []
        for _run, s in g.groupby(["split", "seed"]):
            b = s[s["eval"] == "base"]["top1"]
            n = s[s["eval"] == "novel"]["top1"]
            if len(b) and len(n):
                pairs.append((float(b.mean()), float(n.mean())))
        if not pairs:
            continue
        summ = base2novel_summary(pairs)
        first = g.iloc[0]
        out.append({
            "Method": first["method"], **_setting_columns(g, columns),
            "Trainable": _fmt_params(int(first["trainable"])), "% of backbone": f"{first['pct_of_backbone']:.2f}",
            "Base": round(summ["base"], 2), "Base std": round(summ["base_std"], 2),
            "Novel": round(summ["novel"], 2), "Novel std": round(summ["novel_std"], 2), "HM": round(summ["hm"], 2),
            "HM std (splits)": round(summ["hm_split_std"], 2), "n": summ["n_splits"],
            "Splits": ",".join(map(str, sorted(set(g["split"])))), "Seeds": ",".join(map(str, sorted(set(g["seed"])))),
            "Select": ",".join(sorted(set(map(str, g["select"])))),
            "GMACs/view": first.get("gmacs_per_view"),
        })
    return pd.DataFrame(out)


def generic_table(df: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """One row per (configuration, *by): top-1/top-5 averaged over its splits and seeds."""
    columns = [c for c in _columns(df) if c not in by]
    out = []
    for key, g in df.groupby(["config", *by], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        t1, s1 = mean_std(list(g["top1"]))
        t5, _ = mean_std(list(g["top5"]))
        first = g.iloc[0]
        row = {"Method": first["method"], **_setting_columns(g, columns)}
        row.update({b: v for b, v in zip(by, key[1:])})
        row.update({"Trainable": _fmt_params(int(first["trainable"])), "% of backbone": f"{first['pct_of_backbone']:.2f}",
                    "Top-1": round(t1, 2), "Top-1 std": round(s1, 2), "Top-5": round(t5, 2), "n": len(g),
                    "Seeds": ",".join(map(str, sorted(set(g["seed"])))),
                    "Views": first["views"], "GMACs/view": first.get("gmacs_per_view")})
        out.append(row)
    return pd.DataFrame(out)


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
    shown = {k: v for k, v in shared.items() if not _method_specific(k)}
    order = [k for k in _HEADER_FIRST if k in shown] + sorted(k for k in shown if k not in _HEADER_FIRST)
    first = df.iloc[0]
    lines = ["Settings of every row: " + "; ".join(f"{k}={_cell(shown[k])}" for k in order) + "."]
    columns = [k for k in varying if not _method_specific(k)]
    if columns:
        lines.append("Rows differ in: " + ", ".join(f"`{c}`" for c in columns) + " (columns); method options "
                     "that differ from the defaults are in the method label.")
    lines.append("Each row is one configuration; `n` = runs (splits x seeds) averaged, std over them.")
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
    if df["missing"].sum():
        lines.append(f"Missing videos skipped: {int(df['missing'].sum())} (see per-job metrics).")
    return lines


def plot_ablations(df: pd.DataFrame, run_dir: Path) -> list[Path]:
    """For every method option that takes several values in this run (a `--sweep`), plot the
    headline metric (HM for base-to-novel, top-1 otherwise) against it: `ablation_<option>.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.atomic import atomic_write_bytes

    rows = []
    for label in df["method"].unique():
        base, _, opts = label.partition("[")
        options = dict(kv.split("=", 1) for kv in opts.rstrip("]").split(",") if "=" in kv)
        table = summary_table(df[df["method"] == label])
        metric = "HM" if "HM" in table else "Top-1"
        rows.append({"method": base, "options": options, "value": float(table[metric].iloc[0]), "metric": metric})
    written = []
    for option in sorted({k for r in rows for k in r["options"]}):
        points = sorted(((float(r["options"][option]) if _is_number(r["options"][option]) else r["options"][option],
                          r["value"]) for r in rows if option in r["options"]), key=lambda p: str(p[0]))
        if len({p[0] for p in points}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        xs = [p[0] for p in points]
        ax.plot(range(len(xs)) if not all(isinstance(x, float) for x in xs) else xs, [p[1] for p in points], "o-")
        if not all(isinstance(x, float) for x in xs):
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_xlabel(option)
        ax.set_ylabel(rows[0]["metric"])
        ax.set_title(f"{rows[0]['method']}: {option}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        path = run_dir / f"ablation_{option}.png"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def failures_markdown(failures: list[dict[str, Any]]) -> str:
    """The jobs that failed, with their reason (their error.json holds the traceback)."""
    lines = ["## Failed jobs", "", "| job | error | message |", "|---|---|---|"]
    for f in failures:
        message = str(f.get("message", "")).splitlines()[0] if f.get("message") else ""
        lines.append(f"| {f.get('job_id')} | {f.get('type')} | {message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_summary(run_dir: Path, records: list[dict[str, Any]],
                  failures: list[dict[str, Any]] | None = None) -> tuple[str, Path]:
    """Write summary.md / summary.csv (every table, with protocol and dataset columns) /
    per_job.csv; return the Markdown text and its path."""
    from harness.atomic import atomic_write_text

    df = job_rows(records)
    parts, tables = [], []
    if df.empty:
        parts.append("no finished jobs\n")
    else:
        for (protocol, dataset), g in df.groupby(["protocol", "dataset"], sort=False):
            table = summary_table(g)
            parts.append(f"## {protocol} / {dataset}\n\n" + "\n".join(header_lines(g)) + "\n\n"
                         + to_markdown(table) + "\n")
            tables.append(table.assign(Protocol=protocol, Dataset=dataset))
        combined = pd.concat(tables, ignore_index=True, sort=False)
        front = ["Protocol", "Dataset"]
        combined = combined[front + [c for c in combined.columns if c not in front]]
        atomic_write_text(run_dir / "summary.csv", combined.to_csv(index=False))
        atomic_write_text(run_dir / "per_job.csv", df.drop(columns=["settings"]).to_csv(index=False))
        plots = plot_ablations(df, run_dir)
        if plots:
            parts.append("Ablation plots: " + ", ".join(p.name for p in plots) + "\n")
    if failures:
        parts.append(failures_markdown(failures))
    text = "\n".join(parts)
    path = run_dir / "summary.md"
    atomic_write_text(path, text)
    return text, path
