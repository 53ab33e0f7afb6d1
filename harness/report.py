"""Summary tables from a results directory: per-split rows and the protocol's summary
(base / novel / HM for base-to-novel, top-1/top-5 elsewhere), as Markdown and CSV.

Tables state what makes numbers comparable or not: protocol + hash, profile, model selection,
backbone, frames and views.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from harness.metrics import base2novel_summary, mean_std

PER_METHOD_RECIPE = "per-method recipe"


def method_label(job: dict[str, Any]) -> str:
    """`msta` or `msta[rank=64,alpha=2.0]`: the method plus the options that differ from its
    defaults and from its recipe; ` (per-method recipe)` when the run used `--schedule paper`."""
    from methods.registry import make_config

    recipe = job.get("recipe") or {}
    suffix = f" ({PER_METHOD_RECIPE})" if recipe.get("schedule_kind") == "paper" else ""
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
        for eval_name, ev in metrics["evals"].items():
            rows.append({
                "method": method_label(job), "split": job["split"], "shots": job.get("shots"), "seed": job["seed"],
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
                **_recipe_columns(job),
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


def base2novel_table(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for method, g in df.groupby("method", sort=False):
        per_split = []
        for _split, s in g.groupby("split"):
            b = s[s["eval"] == "base"]["top1"]
            n = s[s["eval"] == "novel"]["top1"]
            if len(b) and len(n):
                per_split.append((float(b.iloc[0]), float(n.iloc[0])))
        if not per_split:
            continue
        summ = base2novel_summary(per_split)
        first = g.iloc[0]
        out.append({
            "Method": method, "Trainable": _fmt_params(int(first["trainable"])),
            "% of backbone": f"{first['pct_of_backbone']:.2f}",
            "Base": round(summ["base"], 2), "Novel": round(summ["novel"], 2), "HM": round(summ["hm"], 2),
            "HM std (splits)": round(summ["hm_split_std"], 2), "Splits": summ["n_splits"],
            "Select": ",".join(sorted(set(map(str, g["select"])))),
            "GMACs/view": first.get("gmacs_per_view"),
        })
    return pd.DataFrame(out)


def generic_table(df: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    out = []
    for key, g in df.groupby(["method", *by], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        t1, s1 = mean_std(list(g["top1"]))
        t5, _ = mean_std(list(g["top5"]))
        row = {"Method": key[0]}
        row.update({b: v for b, v in zip(by, key[1:])})
        first = g.iloc[0]
        row.update({"Trainable": _fmt_params(int(first["trainable"])), "% of backbone": f"{first['pct_of_backbone']:.2f}",
                    "Top-1": round(t1, 2), "Top-1 std": round(s1, 2), "Top-5": round(t5, 2), "Runs": len(g),
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


def header_lines(df: pd.DataFrame) -> list[str]:
    first = df.iloc[0]
    hashes = sorted(set(df["protocol_hash"]))
    lines = [
        f"Protocol `{first['protocol']}` on `{first['dataset']}` (protocol hash {', '.join(hashes)}); "
        f"profile `{first['profile']}`; backbone `{first['backbone']}` ({first['pretrained']}); "
        f"{first['frames']} frames, {first['epochs']} epochs; test views {first['views']}.",
    ]
    if first["profile"] != "-":
        lines.append(f"Profile `{first['profile']}` shortens the schedule: numbers are NOT comparable with papers.")
    if first["protocol"] == "base2novel":
        lines.append("HM = harmonic mean of the split-averaged base and novel top-1 (as the papers report); "
                     "'HM std (splits)' = std of the per-split HM. 'Select': `last` checkpoint, or `best_*` "
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


def write_summary(run_dir: Path, records: list[dict[str, Any]]) -> tuple[str, Path]:
    """Write summary.md / summary.csv / per_job.csv; return the Markdown text and its path."""
    from harness.atomic import atomic_write_text

    df = job_rows(records)
    if df.empty:
        return "no finished jobs", run_dir / "summary.md"
    parts = []
    for (protocol, dataset), g in df.groupby(["protocol", "dataset"], sort=False):
        table = summary_table(g)
        parts.append(f"## {protocol} / {dataset}\n\n" + "\n".join(header_lines(g)) + "\n\n"
                     + to_markdown(table) + "\n")
        atomic_write_text(run_dir / "summary.csv", table.to_csv(index=False))
    atomic_write_text(run_dir / "per_job.csv", df.to_csv(index=False))
    plots = plot_ablations(df, run_dir)
    if plots:
        parts.append("Ablation plots: " + ", ".join(p.name for p in plots) + "\n")
    text = "\n".join(parts)
    path = run_dir / "summary.md"
    atomic_write_text(path, text)
    return text, path
