"""Test-only fault injection: simulate `kill -9` or an OS error at named points of the harness.

`HARNESS_FAULT_POINTS="ckpt.before_rename:2,train.iter:7"` makes this process SIGKILL itself the
2nd time it reaches `ckpt.before_rename` and the 7th time it reaches `train.iter` (counted per
process); `lock.create:1:ENOSPC` makes the 1st and every later pass through `lock.create` raise
`OSError(ENOSPC, "No space left on device")` instead, as a full disk would until space is freed
(any `errno` name).
The variable is read once at import (`injected(plan)` sets a plan inside one process, for
tests); when it is unset `fault_point` is one dict lookup, so production runs pay nothing. The
chaos test (tests/test_checkpoints.py) uses it to check that every kill point leaves a run that a
rerun completes with identical results.
Points (grep `fault_point(`): train.iter (after each training step), atomic.before_rename (every
atomic write, temp file complete and fsynced: checkpoints, metrics.json, config.json, summary),
ckpt.before_pointer (new checkpoint in place, `last_checkpoint` not yet naming it),
ckpt.before_remove (pointer updated, previous checkpoint not yet removed) and lock.create (a lock
file's record being written: harness/locks.py).
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator

ENV = "HARNESS_FAULT_POINTS"


def _parse(text: str) -> dict[str, tuple[int, str | None]]:
    """`name[:count[:ERRNO]]` items -> {name: (count, errno name or None for a kill)}."""
    plan: dict[str, tuple[int, str | None]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = item.partition(":")
        count, _, error = rest.partition(":")
        if error and not isinstance(getattr(errno, error, None), int):
            raise ValueError(f"{ENV}: {item!r}: {error!r} is no errno name (e.g. ENOSPC)")
        plan[name] = (int(count or 1), error or None)
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process (no cleanup, no atexit: exactly like kill -9) at the planned pass, or
    raise the planned OSError from that pass on."""
    if name not in _PLAN:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    count, error = _PLAN[name]
    if error is not None and _SEEN[name] >= count:  # an OS error persists (a full disk stays full)
        code = getattr(errno, error)
        raise OSError(code, os.strerror(code))
    if error is None and _SEEN[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def injected(plan: str) -> Iterator[None]:
    """Within the block, `plan` (the `HARNESS_FAULT_POINTS` syntax) replaces this process's plan,
    counting from zero; the previous plan and counts come back afterwards."""
    global _PLAN, _SEEN
    saved = _PLAN, _SEEN
    _PLAN, _SEEN = _parse(plan), {}
    try:
        yield
    finally:
        _PLAN, _SEEN = saved
