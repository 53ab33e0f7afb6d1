"""Bench rows as an aligned text table, a Markdown table stamped with the card and versions, or JSON."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

_TABLE_COLUMNS = (
    ("method", "method", "{}"),
    ("mode", "mode", "{}"),
    ("clips_per_s", "clips/s", "{:.1f}"),
    ("step_ms", "step ms", "{:.1f}"),
    ("peak_mem_gib", "peak mem GiB", "{:.2f}"),
    ("step_gflops", "step GFLOPs", "{:.4g}"),
    ("achieved_tflops", "TFLOP/s", "{:.3g}"),
    ("mfu", "MFU", "{:.1%}"),
    ("mfu_datasheet", "MFU (datasheet)", "{:.1%}"),
    ("first_step_s", "first step s", "{:.1f}"),
    ("compile", "compile", "{}"),
    ("status", "status", "{}"),
)


def _cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def stamp(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the card, driver and versions the rows were measured with."""
    if not rows:
        return "no rows"
    r = rows[0]
    return (f"card: {r.get('card')} | driver: {r.get('driver') or '-'} | torch {r.get('torch')} | "
            f"CUDA {r.get('cuda') or '-'} | open_clip {r.get('open_clip')} | python {r.get('python')} | "
            f"measured {r.get('peak_dtype', '?')} matmul peak {r.get('peak_tflops_measured', '-')} TFLOP/s | "
            f"backbone {r.get('backbone')} | batch {r.get('batch')} x {r.get('frames')} frames x "
            f"{r.get('image_size')} px | amp {r.get('amp')} | {r.get('num_classes')} classes")


def format_bench(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    """Rows as an aligned text table, a Markdown table (with a stamp line) or JSON."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt not in ("table", "markdown"):
        raise ValueError(f"fmt must be 'table', 'markdown' or 'json', got {fmt!r}")
    header = [title for _, title, _ in _TABLE_COLUMNS]
    body = [[_cell(r, key, f) for key, _, f in _TABLE_COLUMNS] for r in rows]
    if fmt == "markdown":
        lines = [f"_{stamp(rows)}_", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    out = [stamp(rows), "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(out) + "\n"
