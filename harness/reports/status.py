"""`harness status RESULTS_DIR`: each job of a results folder as done, running (who holds its
lock), failed (its recorded reason) or pending (listed by a recorded `harness run` invocation, or
started and interrupted, but not finished).

Running is read from the job's lock file (`jobs/<id>/job.lock`, harness.locks): a lock whose
holder is dead or whose heartbeat is too old is reported as stale, i.e. the job is pending.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.locks import JOB_LOCK, describe_holder, lock_state


@dataclass
class JobState:
    job_id: str
    state: str  # done | running | failed | pending
    detail: str = ""


def job_state(job_dir: Path) -> JobState:
    """The state of one job folder (see module doc)."""
    job_id = job_dir.name
    if (job_dir / "metrics.json").is_file():
        return JobState(job_id, "done")
    info, stale = lock_state(job_dir / JOB_LOCK)
    lock_note = ""
    if info is not None:
        if stale is None:
            return JobState(job_id, "running", describe_holder(info))
        lock_note = f"stale lock: {stale}"
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
