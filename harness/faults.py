"""Test-only fault injection: simulate `kill -9` at named points of the harness.

`HARNESS_FAULT_POINTS="ckpt.before_rename:2,train.iter:7"` makes this process SIGKILL itself the
2nd time it reaches `ckpt.before_rename` and the 7th time it reaches `train.iter` (counted per
process). The variable is read once at import; when it is unset `fault_point` is one dict
lookup, so production runs pay nothing. The chaos test (tests/test_checkpoints.py) uses it to
check that every kill point leaves a run that a rerun completes with identical results.
Points (grep `fault_point(`): train.iter (after each training step), atomic.before_rename (every
atomic write, temp file complete and fsynced: checkpoints, metrics.json, config.json, summary),
ckpt.before_pointer (new checkpoint in place, `last_checkpoint` not yet naming it) and
ckpt.before_remove (pointer updated, previous checkpoint not yet removed).
"""
from __future__ import annotations

import os
import signal

ENV = "HARNESS_FAULT_POINTS"


def _parse(text: str) -> dict[str, int]:
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        plan[name] = int(count or 1)
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process when the plan says so (no cleanup, no atexit: exactly like kill -9)."""
    if name not in _PLAN:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _PLAN[name]:
        os.kill(os.getpid(), signal.SIGKILL)
