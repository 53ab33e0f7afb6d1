"""Standard errors of the tables' accuracy cells and the marks on differences within noise.

A cell averages k runs (splits x seeds). Its standard error (`<metric> se`) is the eval-set
sampling noise of that average: the binomial SE of each run (top-1 on n videos, n from
metrics.json's `evals.<set>.n`) combined by `metrics.run_average_standard_error` (runs on
different eval sets independent, seeds of one split sharing their set's error). The spread over
splits / seeds stays in `<metric> std`. A row whose value is within noise of the table's
reference row (`zeroshot` when present, else the first measured row) is marked: `<metric>
within_noise` is True, shown as `≈` after the cell (`metrics.within_noise`: |a - b| <= 2 SE of
the difference).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.metrics import (
    accuracy_standard_error,
    base2novel_summary,
    run_average_standard_error,
    within_noise,
)

SE_SUFFIX = " se"
NOISE_SUFFIX = " within_noise"
MARK = "≈"
REFERENCE_METHOD = "zeroshot"

NOTE = (f"`{MARK}`: within noise of the reference row `{{reference}}` (|difference| <= 2 sqrt(SE_a^2 + SE_b^2)).")

#: What `(SE x)` in a cell means, for a report's header.
SE_LEGEND = ("(SE x): standard error of the value from eval-set sampling (binomial per run, combined over "
             "the runs averaged; docs/reports.md); HM's by the delta method.")


def cell_standard_error(runs: pd.DataFrame, column: str = "top1") -> float:
    """SE (points) of the mean of `runs[column]`, one row per run and eval set (columns
    `column`, `n`, and `eval_set` (the list file scored) or else `dataset` / `split` / `eval`
    naming the eval set when present)."""
    if runs.empty:
        return float("nan")
    ses = [accuracy_standard_error(float(acc), int(n)) if _known(acc) and _known(n) else float("nan")
           for acc, n in zip(runs[column], runs["n"])]
    # the list file scored names the videos; without it, dataset / split / eval name do
    if "eval_set" in runs and runs["eval_set"].notna().all():
        keys = ["eval_set"]
    else:
        keys = [c for c in ("dataset", "split", "eval") if c in runs]
    sets = list(runs[keys].astype(str).agg("/".join, axis=1)) if keys else None
    return run_average_standard_error(ses, sets)


def base2novel_cells(g: pd.DataFrame) -> tuple[dict[str, float], float, float, int] | None:
    """One configuration's base-to-novel numbers: `metrics.base2novel_summary` over its runs
    (split x seed) that have both a base and a novel eval, the SE of the averaged base and novel
    cells over those runs, and how many runs there are; None when no run has both."""
    pairs, runs = [], []
    for _run, s in g.groupby(["split", "seed"]):
        b, n = s[s["eval"] == "base"]["top1"], s[s["eval"] == "novel"]["top1"]
        if len(b) and len(n):
            pairs.append((float(b.mean()), float(n.mean())))
            runs.append(s)
    if not pairs:
        return None
    used = pd.concat(runs)
    return (base2novel_summary(pairs), cell_standard_error(used[used["eval"] == "base"]),
            cell_standard_error(used[used["eval"] == "novel"]), len(pairs))


def average_standard_error(ses: Sequence[float]) -> float:
    """SE of a plain average of independent estimates (e.g. over datasets): sqrt(sum se^2) / k."""
    return run_average_standard_error(list(ses))


def is_marked(flag: object) -> bool:
    """A `within_noise` cell that is set (pandas gives True, numpy's True, False or <NA>)."""
    return flag is not None and flag is not pd.NA and bool(flag == True)  # noqa: E712 (numpy bools)


def _known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def reference_position(frame: pd.DataFrame) -> int | None:
    """Position of the row every other row is compared with: the first measured `zeroshot` row,
    else the first measured row; None when there is no measured row."""
    measured = [i for i, quoted in enumerate(frame["Quoted"].astype(bool)) if not quoted] if "Quoted" in frame \
        else list(range(len(frame)))
    if not measured:
        return None
    for i in measured:
        if frame.iloc[i]["Method"] == REFERENCE_METHOD:
            return i
    return measured[0]


def noise_flags(values: Sequence[float], ses: Sequence[float], reference: int) -> list[bool | None]:
    """Per value: within noise of `values[reference]` (None for the reference itself and where a
    value or an SE is unknown)."""
    ref, ref_se = values[reference], ses[reference]
    out: list[bool | None] = []
    for i, (value, se) in enumerate(zip(values, ses)):
        if i == reference or any(not _known(x) for x in (value, se, ref, ref_se)):
            out.append(None)
        else:
            out.append(within_noise(float(value), float(se), float(ref), float(ref_se)))
    return out


def best_flags(values: Sequence[float], ses: Sequence[float]) -> list[bool | None]:
    """Per value of a sweep: within noise of the best (highest) one; the best itself True."""
    known = [i for i, v in enumerate(values) if _known(v)]
    if not known:
        return [None] * len(values)
    best = max(known, key=lambda i: values[i])
    flags = noise_flags(values, ses, best)
    flags[best] = True
    return flags


def mark_table(frame: pd.DataFrame, metrics: Sequence[str],
               by: Sequence[str] = ()) -> tuple[pd.DataFrame, str | None]:
    """`frame` with a `<metric> within_noise` column per metric that has an SE column (True /
    False / None), and the note explaining the mark (None when nothing could be compared). With
    `by` (columns such as `Eval`), rows are compared only within their group, each group with its
    own reference row: rows measured on different eval sets are never compared."""
    frame = frame.reset_index(drop=True)
    keys = [c for c in by if c in frame]
    groups = [list(idx) for idx in frame.groupby(keys, sort=False, dropna=False).indices.values()] if keys \
        else [list(range(len(frame)))]
    flags: dict[str, list[bool | None]] = {m: [None] * len(frame) for m in metrics
                                           if m in frame and m + SE_SUFFIX in frame}
    references = []
    quoted = frame["Quoted"].astype(bool).tolist() if "Quoted" in frame else [False] * len(frame)
    for rows in groups:
        part = frame.iloc[rows]
        reference = reference_position(part)
        if reference is None or len(rows) < 2:
            continue
        references.append(part.iloc[reference]["Method"])
        for metric, column in flags.items():
            values = [float(v) if _known(v) else float("nan") for v in pd.to_numeric(part[metric], errors="coerce")]
            for row, flag in zip(rows, noise_flags(values, list(part[metric + SE_SUFFIX]), reference)):
                column[row] = None if quoted[row] else flag
    if not flags:
        return frame, None
    frame = frame.copy()
    for metric, column in flags.items():
        frame[metric + NOISE_SUFFIX] = pd.array(column, dtype="boolean")
    if not any(f is not None for column in flags.values() for f in column):
        return frame, None
    names = list(dict.fromkeys(references))
    reference = names[0] if len(names) == 1 else "the first row of each " + "/".join(keys)
    return frame, NOTE.format(reference=reference)
