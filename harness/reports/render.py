"""A `ReportTable` as text cells: metrics as `mean ± std (SE se)` (std only when n > 1, SE when
known), `≈` after a value within noise of the reference row (harness.reports.noise), the best
measured value of each metric column marked (bold), parameters as `0.40M`, hidden columns
(`_match`, `Quoted`, the `<metric> std` / `se` / `within_noise` companions) folded in or dropped. Markdown and LaTeX
share these cells; only the bold and the escaping differ."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from harness.reports.noise import MARK, NOISE_SUFFIX, SE_SUFFIX, is_marked
from harness.reports.rows import VOCAB_COLUMNS, fmt_params
from harness.reports.tables import ReportTable


def _number(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (int, float)):
        return f"{value:+.2f}" if signed else f"{value:.2f}"
    return str(value)


def _plain(value: Any, column: str) -> str:
    """A non-metric cell: percentages with 2 decimals, whole numbers without any (a column
    with gaps is float in pandas: 8.0 -> 8), other numbers as Python shows them."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        if column == "% of backbone":
            return f"{value:.2f}"
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def best_rows(table: ReportTable) -> dict[str, set[int]]:
    """Per metric column: the positions of the measured rows holding its best (highest) value,
    when at least two measured rows have one. Quoted rows never count."""
    frame = table.frame
    measured = frame[~frame["Quoted"].astype(bool)]
    out: dict[str, set[int]] = {}
    for metric in table.metrics:
        values = pd.to_numeric(measured[metric], errors="coerce").dropna()
        if len(values) >= 2:
            out[metric] = {frame.index.get_loc(i) for i in values[values == values.max()].index}
    return out


def visible_columns(table: ReportTable) -> list[str]:
    frame = table.frame
    cols = []
    for col in frame.columns:
        if col.startswith("_") or col == "Quoted" or _companion(col, table.metrics):
            continue
        if col in ("Source", "Flags") and not frame[col].fillna("").astype(str).str.len().any():
            continue
        cols.append(col)
    tail = [c for c in ("n", "Flags", "Source") if c in cols]
    return [c for c in cols if c not in tail] + tail


def _companion(column: str, metrics: list[str]) -> bool:
    """A `<metric> std` / `se` / `within_noise` column: shown inside its metric's cell."""
    return any(column.endswith(suffix) and column[:-len(suffix)] in metrics
               for suffix in (" std", SE_SUFFIX, NOISE_SUFFIX))


def cells(table: ReportTable, bold: Callable[[str], str], pm: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text cells); `bold` wraps a best value, `pm` joins mean and std."""
    columns = visible_columns(table)
    best = best_rows(table)
    rows = []
    for pos, (_, row) in enumerate(table.frame.iterrows()):
        out = []
        for col in columns:
            value = row[col]
            if col == "Trainable":
                text = "" if value is None or value != value else fmt_params(int(value))
            elif col in table.metrics:
                text = _number(value)
                std = row.get(f"{col} std")
                if text and std is not None and std == std:
                    text = f"{text}{pm}{_number(std)}"
                se = row.get(f"{col}{SE_SUFFIX}")
                if text and se is not None and se == se:
                    text = f"{text} (SE {_number(se)})"
                if text and is_marked(row.get(f"{col}{NOISE_SUFFIX}")):
                    text = f"{text} {MARK}"
                if text and pos in best.get(col, ()):
                    text = bold(text)
            elif col.startswith("Δ "):
                text = _number(value, signed=True)
            elif col in VOCAB_COLUMNS:
                text = _number(value, signed=col == "Vocab change")
            elif col == "n" and row["Quoted"]:
                text = ""
            else:
                text = _plain(value, col)
            out.append(text)
        rows.append(out)
    return columns, rows


def to_markdown(table: ReportTable) -> str:
    header, rows = cells(table, lambda t: f"**{t}**", " ± ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_section(table: ReportTable) -> str:
    notes = "".join(f"{n}\n" for n in table.notes)
    return f"## {table.title}\n\n{notes}\n{to_markdown(table)}\n"


def to_csv(table: ReportTable) -> str:
    """Numbers as numbers, one column per field (std beside its metric), `Quoted` and `Source`
    telling published rows apart."""
    frame = table.frame.drop(columns=[c for c in table.frame.columns if c.startswith("_")])
    return frame.to_csv(index=False)
