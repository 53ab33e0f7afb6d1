"""The parameter/FLOPs table behind `harness params`: one row per method as configured.

Why a function of its own (the CLI only formats): the counts are the project's claim that each
method is reproduced exactly (docs/METHODS.md lists the official numbers), so tests and the docs
use the very same rows the CLI prints. The class count matters: a linear head or Vita-CLIP's
class-specific contexts have parameters per class.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from harness.backbone import backbone_token_layout, get_tokenizer
from harness.errors import ConfigurationError
from harness.measure.flops import count_flops, give_placeholder_descriptions
from harness.weights import create_backbone
from methods.registry import build_method, default_options, get_method


def params_rows(
    methods: Sequence[str],
    backbone: str = "ViT-B-16",
    pretrained: str | None = None,
    frames: int = 8,
    num_classes: int = 400,
    overrides: Mapping[str, Any] | None = None,
    with_flops: bool = True,
) -> list[dict[str, Any]]:
    """One row per method: ``method, options`` (resolved config; `overrides` maps a method to its
    configuration, built once by `harness.api.params`, or to option values), ``trainable, total (a
    frozen teacher included), teacher (its parameters alone; 0 without one), trainable_pct, frames,
    num_classes`` and, when `with_flops`, ``gflops`` (one view, a
    multiply-add = 2), ``gmacs`` and ``text_gflops_per_class`` (None otherwise).

    Each method gets a fresh backbone (methods modify it in place); FLOPs are counted on a meta
    copy, so the table costs only model construction. A method that does not run on the
    backbone's token layout gets a row with its one-line refusal (``refused``) and no counts.
    """
    classnames = [f"class {i}" for i in range(num_classes)]
    rows = []
    for name in methods:
        try:
            get_method(name).model_cls.check_token_layout(backbone_token_layout(backbone))
        except ConfigurationError as err:
            rows.append({"method": name, "refused": str(err), "trainable": None, "total": None, "trainable_pct": None,
                         "frames": frames, "num_classes": num_classes, "backbone": backbone, "options": {}})
            continue
        clip, spec = create_backbone(backbone, pretrained)
        model = build_method(name, clip, get_tokenizer(spec), frames, (overrides or {}).get(name), classnames)
        counts = model.parameter_counts()
        row: dict[str, Any] = {
            "method": name,
            "options": model.config.to_dict(),
            "trainable": counts["trainable"],
            "total": counts["total"],
            "teacher": counts["teacher"],
            "trainable_pct": counts["trainable_pct"],
            "frames": frames,
            "num_classes": num_classes,
            "backbone": backbone,
            "image_size": spec.image_size,
            "gflops": None,
            "gmacs": None,
            "text_gflops_per_class": None,
        }
        if with_flops:
            give_placeholder_descriptions(model, classnames[:1])  # the text count encodes the first class
            flops = count_flops(model, frames, spec.image_size)
            row.update(gflops=flops["gflops"], gmacs=flops["gmacs"],
                       text_gflops_per_class=flops["text_gflops_per_class"])
        rows.append(row)
        del model, clip
    return rows


def _non_default_options(method: str, options: Mapping[str, Any]) -> str:
    """Options that differ from the method's defaults, as `k=v` (the table stays narrow; JSON
    has the full resolved config)."""
    try:
        defaults = default_options(method)
    except Exception:  # noqa: BLE001 - an unknown method in hand-made rows: show everything
        defaults = {}
    changed = [f"{k}={v}" for k, v in options.items() if defaults.get(k, object()) != v]
    return ", ".join(changed) or "defaults"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_params_table(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    """Rows as an aligned text table (``fmt='table'``), Markdown (``'markdown'``) or JSON."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt not in ("table", "markdown"):
        raise ValueError(f"fmt must be 'table', 'markdown' or 'json', got {fmt!r}")
    refusals = "".join(f"{r['method']}: refused: {r['refused']}\n" for r in rows if r.get("refused"))
    rows = [r for r in rows if not r.get("refused")]
    header = ["method", "trainable", "total", "of which teacher", "trainable %", "GFLOPs/view", "GMACs/view",
              "text GFLOPs/class", "frames", "classes", "options"]
    body = [[
        str(r["method"]), _fmt(r["trainable"], ","), _fmt(r["total"], ","), _fmt(r.get("teacher") or None, ","),
        _fmt(r["trainable_pct"], ".4f"),
        _fmt(r.get("gflops"), ".2f"), _fmt(r.get("gmacs"), ".2f"), _fmt(r.get("text_gflops_per_class"), ".3f"),
        str(r["frames"]), str(r["num_classes"]), _non_default_options(str(r["method"]), r.get("options") or {}),
    ] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n" + refusals
    widths = [max([len(h)] + [len(c[i]) for c in body]) for i, h in enumerate(header)]
    numeric = set(range(1, 10))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header)] + [line(c) for c in body]).rstrip() + "\n" + refusals
