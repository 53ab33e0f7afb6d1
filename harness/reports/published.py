"""Published numbers (published.csv, quoted from ../shared/docs/PROTOCOLS.md) as quoted rows.

Quoted rows sit below the measured ones, are marked `Quoted` with their source, are never bolded
and never enter a mean. A `Δ <metric>` column compares a measured row with the published number
of the same method only when protocol, dataset, backbone, pretrained weights and frames all
match, the method ran with its default options, and no schedule-shortening profile was used.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.reports.tables import ReportTable

PUBLISHED_FILE = Path(__file__).with_name("published.csv")
FIELDS = ("protocol", "dataset", "method", "metric", "value", "backbone", "pretrained", "frames", "source")


def load_published(path: Path = PUBLISHED_FILE) -> list[dict[str, Any]]:
    """The rows of `path` (lines starting with '#' are comments); a malformed line is an error
    naming file and line."""
    with open(path) as handle:
        lines = [(i, line) for i, line in enumerate(handle, 1) if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(line for _, line in lines)
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise HarnessError(f"{path}: header must be {','.join(FIELDS)}")
    out = []
    for (number, _), row in zip(lines[1:], reader):
        try:
            row["value"] = float(row["value"])
            row["frames"] = int(row["frames"]) if row["frames"] else None
        except ValueError:
            raise HarnessError(f"{path}:{number}: value and frames must be numbers") from None
        out.append(row)
    return out


def add_published(table: ReportTable, published: list[dict[str, Any]]) -> ReportTable:
    """`table` with the quoted rows that fill at least one of its metric columns appended, and
    `Δ <metric>` columns where a measured row matches a published one (see module doc)."""
    quoted: dict[tuple, dict[str, Any]] = {}
    for pub in published:
        if pub["protocol"] != table.protocol:
            continue
        column = table.column_for(pub["dataset"], pub["metric"])
        if column is None:
            continue
        key = (pub["method"], pub["backbone"], pub["pretrained"], pub["frames"], pub["source"])
        row = quoted.setdefault(key, {
            "Quoted": True, "Method": f"{pub['method']} (quoted)", "Source": _describe(pub)})
        row[column] = pub["value"]
    frame = table.frame.copy()
    for metric in table.metrics:
        column = []
        for (_, row) in frame.iterrows():
            pub = _match(row["_match"], table, metric, published)
            column.append(np.nan if pub is None or row[metric] != row[metric] else round(row[metric] - pub, 2))
        if not all(np.isnan(column)):
            frame[f"Δ {metric}"] = column
    if quoted:
        frame = pd.concat([frame, pd.DataFrame(list(quoted.values()))], ignore_index=True, sort=False)
        frame["Quoted"] = frame["Quoted"].astype(bool)
        frame["Source"] = frame["Source"].fillna("")
    if not quoted and not any(c.startswith("Δ ") for c in frame.columns):
        return table
    notes = table.notes + ["Quoted rows: published numbers as reported (`(quoted)`, with their source); never "
                           "bolded nor averaged. Δ = measured minus published, only where protocol, dataset, "
                           "backbone, weights and frames match and no shortening profile was used."]
    return ReportTable(table.slug, table.title, frame, table.metrics, table.headline, notes, table.protocol,
                       table.dataset)


def _describe(pub: dict[str, Any]) -> str:
    weights = "ViCLIP" if pub["pretrained"] == "viclip" else "CLIP"
    frames = f", {pub['frames']} frames" if pub["frames"] else ""
    return f"{pub['source']} ({weights} {pub['backbone']}{frames})"


def _match(match: dict[str, Any] | None, table: ReportTable, column: str,
           published: list[dict[str, Any]]) -> float | None:
    """The published value a measured row (its `_match` record) is comparable with, if any."""
    if not match or match["profile"] not in ("-", None):
        return None
    for pub in published:
        if (pub["protocol"] == table.protocol and pub["method"] == match["method"]
                and pub["backbone"] == match["backbone"] and pub["pretrained"] == match["pretrained"]
                and pub["frames"] == match["frames"] and table.column_for(pub["dataset"], pub["metric"]) == column):
            return float(pub["value"])
    return None
