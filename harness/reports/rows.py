"""Job identity and per-job rows shared by every table of the project: which settings make a
row (`config_key`: the job's identity minus split and seed), how a method is labelled, one frame
row per (job, evaluation set), Markdown table text. The run summary (`harness.report`) and the
cross-run reports (`harness.reports.*`) both build on it; it imports neither.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from harness.jobs.identity import EXECUTION_ONLY_DATA_KEYS, EXECUTION_ONLY_KEYS, short_hash

PER_METHOD_RECIPE = "per-method recipe"
EVALUATED_CHECKPOINT = "evaluated checkpoint"  # `harness eval` rows: no training in this run


#: Job fields that are not part of a row's configuration: the two averaged over (split, seed),
#: what follows from the split (its files, class lists, descriptions), what follows from the
#: protocol, and bookkeeping. (`results_format` is configuration: results of another format were
#: computed under other rules, e.g. format 2's micro-batch-dependent training, and get rows of
#: their own.)
NOT_CONFIG_KEYS = ("split", "seed", "train", "evals", "file_provenance", "descriptions", "select_on",
                   "closed_set", "summary", "splits_root", "cache_dir", "job_id")


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


def _profile_method_options(job: dict[str, Any]) -> dict[str, Any]:
    """The options the job's profile sets for its method (e.g. the embedded profile's searched
    lrs): part of the setting every row of that profile shares, not a per-row variation."""
    from protocols import load_profiles

    profile = load_profiles().get(job.get("profile") or "", {})
    return dict((profile.get("method_options") or {}).get(job["method"], {}))


def method_label(job: dict[str, Any]) -> str:
    """`msta` or `msta[rank=64,alpha=2.0]`: the method plus the options that differ from its
    defaults and from its recipe; ` (per-method recipe)` when the run used `--schedule paper`."""
    from methods.registry import default_options  # the method files (torch) only when rows are labelled

    recipe = job.get("recipe") or {}
    suffix = f" ({PER_METHOD_RECIPE})" if recipe.get("schedule_kind") == "paper" else ""
    suffix += f" ({EVALUATED_CHECKPOINT})" if job.get("checkpoint") else ""
    try:
        defaults = default_options(job["method"])
    except Exception:  # a method removed since the run: show the raw name
        return job["method"] + suffix
    defaults.update(recipe.get("method_options") or {})
    defaults.update(_profile_method_options(job))
    diff = {k: v for k, v in job["method_options"].items() if defaults.get(k) != v}
    if not diff:
        return job["method"] + suffix
    return job["method"] + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]" + suffix


def job_rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        job, metrics = rec["job"], rec["metrics"]
        key, label = config_key(job), method_label(job)
        for eval_name, ev in metrics["evals"].items():
            rows.append({
                "config": config_id(job), "settings": key, "method": label, "split": job["split"], "shots": job.get("shots"), "seed": job["seed"],
                "eval": eval_name, "eval_set": _eval_set(job, eval_name), "top1": ev.get("top1"), "top5": ev.get("top5"),
                "n": ev.get("n"),
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
                **_recipe_columns(job), **vocabulary_fields(metrics),
            })
    return pd.DataFrame(rows)


def _eval_set(job: dict[str, Any], eval_name: str) -> str | None:
    """The list file an eval scored (None when the job does not say): runs that score the same
    list share its sampling error (base-to-novel splits share base_val / novel_val)."""
    for spec in job.get("evals") or []:
        if spec.get("name") == eval_name and spec.get("ann_file"):
            return str(spec["ann_file"])
    return None


def _recipe_columns(job: dict[str, Any]) -> dict[str, Any]:
    """Which schedule and recipe a job ran with (harness.recipes), for the tables' notes."""
    recipe = job.get("recipe") or {}
    not_applied = recipe.get("not_applied") or {}
    return {"schedule": PER_METHOD_RECIPE if recipe.get("schedule_kind") == "paper" else "shared",
            "recipe_scope": recipe.get("scope", "method default"),
            "lr": job["method_options"].get("lr"), "weight_decay": job["method_options"].get("weight_decay"),
            "not_applied": ", ".join(f"{k}={v}" for k, v in sorted(not_applied.items()))}


def vocabulary_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """The job's forgetting measurement (metrics "vocabulary", harness.engine.forgetting): mean
    zero-shot top-1 on the held-out pretraining vocabulary before and after training; None when
    the job has none (not `synthetic` weights, an older result, or the measurement failed)."""
    vocab = metrics.get("vocabulary") or {}
    before, after = (vocab.get(k) or {} for k in ("before", "after"))
    return {"vocab_before": before.get("mean"), "vocab_after": after.get("mean"), "vocab_n": vocab.get("n"),
            "vocab_chance": vocab.get("chance")}


#: Table columns of the forgetting measurement (means over a row's runs; absent when no run has it).
VOCAB_COLUMNS = ("Vocab before", "Vocab after", "Vocab change")


def vocabulary_cells(g: pd.DataFrame) -> dict[str, float]:
    """`VOCAB_COLUMNS` of one table row: the mean over its runs (one per job: `g` has a row per
    evaluation set) of the accuracy before, after, and of after - before (points; negative =
    forgotten). {} when none of its runs measured it."""
    if "vocab_before" not in g:
        return {}
    runs = g.drop_duplicates("job_id")
    runs = runs[runs["vocab_before"].notna() & runs["vocab_after"].notna()]
    if runs.empty:
        return {}
    before, after = runs["vocab_before"].astype(float), runs["vocab_after"].astype(float)
    return dict(zip(VOCAB_COLUMNS, (round(float(x.mean()), 2) for x in (before, after, after - before))))


def vocabulary_note(df: pd.DataFrame) -> str | None:
    """What the Vocab columns are, with the frame count and the binomial standard error it gives;
    None when no job of `df` measured it."""
    from harness.metrics import accuracy_standard_error

    measured = df[df["vocab_n"].notna()] if "vocab_n" in df else df.iloc[0:0]
    if measured.empty:
        return None
    n, chance = int(measured["vocab_n"].iloc[0]), pd.to_numeric(measured["vocab_chance"]).iloc[0]
    chance_text = f"; chance {float(chance):.1f}" if chance == chance else ""
    return (f"Vocab before / after: zero-shot top-1 on the backbone's pretraining vocabulary ({n} held-out "
            f"synthetic frames as static clips, mean over colour, position, vertical position, size and shape"
            f"{chance_text}), through each method's own video and text paths, before and after its "
            f"training; binomial standard error <= {accuracy_standard_error(50.0, n):.1f} points. "
            "Vocab change = after - before (points; negative = forgotten), mean over runs. "
            "Only jobs on `synthetic` weights measure it.")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' own needs the `tabulate` package)."""
    cols = list(df.columns)
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def method_specific(key: str) -> bool:
    """Settings a method label or the recipe notes already show (they differ per method by design)."""
    return key == "method" or key.startswith(("method_options.", "recipe."))


def failures_markdown(failures: list[dict[str, Any]]) -> str:
    """The jobs that failed, with their reason (their error.json holds the traceback)."""
    lines = ["## Failed jobs", "", "| job | error | message |", "|---|---|---|"]
    for f in failures:
        message = str(f.get("message", "")).splitlines()[0] if f.get("message") else ""
        lines.append(f"| {f.get('job_id')} | {f.get('type')} | {message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
