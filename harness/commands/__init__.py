"""Command front ends: parsed options in, text or JSON out. The layer above `harness.api`.

Why a layer of its own: a front end (the throughput / data / order-pair benches, `harness data
check|prepare`) needs the API (to plan and run jobs) and the measuring code below it, and prints;
the measuring code must not reach back up to the API (`tests/test_layering.py` enforces the
order: docs/architecture.md). `harness/cli.py` builds the argument parser and dispatches here.

Output discipline, shared by every command: with `--format json`, stdout carries exactly one JSON
document (strict: NaN and infinities as null); progress and library chatter go to stderr
(harness/data/pipeline.py sends mmengine's console logger there).
"""
from __future__ import annotations

import json
import sys
from typing import Any

from harness.atomic import atomic_write_json


def strict_json(obj: Any) -> Any:
    """`obj` as strict JSON values: NaN / infinity (an undefined standard error, ...) -> None."""
    return json.loads(json.dumps(obj, default=str), parse_constant=lambda _: None)


def print_json(obj: Any) -> None:
    """The command's result on stdout, as one strict JSON document."""
    print(json.dumps(strict_json(obj), indent=2), file=sys.stdout, flush=True)


def write_json(path: str, obj: Any) -> None:
    """The command's result into `--json FILE` (atomically, strict JSON)."""
    atomic_write_json(path, strict_json(obj), sort_keys=False)
