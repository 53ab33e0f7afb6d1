"""`harness status RESULTS_DIR`: each job of a results folder as done, running (who holds its
lock), failed (its recorded reason) or pending (listed by a recorded `harness run` invocation, or
started and interrupted, but not finished).

Running is read from the job's lock file (`jobs/<id>/job.lock`, JSON with pid / host / started,
its modification time the holder's heartbeat; see harness.locks): a lock whose heartbeat is older
than its `stale_after_s` is reported as stale, i.e. the job is pending.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

JOB_LOCK = "job.lock"  # harness.locks.JOB_LOCK
DEFAULT_STALE_S = 600.0


@dataclass
class JobState:
    job_id: str
    state: str  # done | running | failed | pending
    detail: str = ""


def _holder(lock: Path) -> tuple[dict[str, Any] | None, float]:
    try:
        age = time.time() - lock.stat().st_mtime
        return json.loads(lock.read_text()), age
    except FileNotFoundError:
        return None, -1.0
    except (OSError, ValueError):
        return {}, 0.0  # being written: treat as held


def _describe(info: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {started}"


def job_state(job_dir: Path) -> JobState:
    """The state of one job folder (see module doc)."""
    job_id = job_dir.name
    if (job_dir / "metrics.json").is_file():
        return JobState(job_id, "done")
    info, age = _holder(job_dir / JOB_LOCK)
    if info is not None:
        stale = float(info.get("stale_after_s", DEFAULT_STALE_S))
        if age <= stale:
            return JobState(job_id, "running", _describe(info) + f", heartbeat {age:.0f} s ago")
        lock_note = f"stale lock ({_describe(info)}, no heartbeat for {age:.0f} s)"
    else:
        lock_note = ""
    error = job_dir / "error.json"
    if error.is_file():
        try:
            record = json.loads(error.read_text())
            message = str(record.get("message", "")).splitlines()
            reason = f"{record.get('type')}: {message[0] if message else ''}"
        except (OSError, ValueError):
            reason = f"unreadable {error}"
        return JobState(job_id, "failed", reason)
    return JobState(job_id, "pending", "started, not finished" + (f"; {lock_note}" if lock_note else ""))


def planned_jobs(root: Path) -> tuple[list[str], list[str]]:
    """(ids of the jobs every recorded `harness run` invocation of the folder set out to run,
    notes on records that do not say: written before invocations listed their jobs)."""
    ids: dict[str, None] = {}
    notes = []
    for path in sorted((root / "invocations").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            notes.append(f"{path.name}: unreadable")
            continue
        if "job_ids" not in record:
            notes.append(f"{path.name}: older record without its job list (jobs never started are not shown)")
            continue
        ids.update(dict.fromkeys(record["job_ids"]))
    return list(ids), notes


def folder_status(root: Path) -> tuple[list[JobState], list[str]]:
    root = Path(root)
    if not (root / "jobs").is_dir() and not (root / "invocations").is_dir():
        raise HarnessError(f"{root}: not a results directory (no jobs/ or invocations/ folder)")
    states = {d.name: job_state(d) for d in sorted((root / "jobs").glob("*")) if d.is_dir()}
    planned, notes = planned_jobs(root)
    for job_id in planned:
        states.setdefault(job_id, JobState(job_id, "pending", "not started"))
    order = {name: i for i, name in enumerate(planned)}
    return sorted(states.values(), key=lambda s: (order.get(s.job_id, len(order)), s.job_id)), notes


def format_status(states: list[JobState], notes: list[str]) -> str:
    counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "failed", "pending")}
    width = max((len(s.job_id) for s in states), default=10)
    lines = [f"{s.job_id:<{width}}  {s.state:<8} {s.detail}".rstrip() for s in states]
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
