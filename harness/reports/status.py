"""`harness status RESULTS_DIR`: each job of a results folder as done, running (who holds its
lock), failed (its recorded reason) or pending (listed by a recorded `harness run` invocation, or
started and interrupted, but not finished).

Running is read from the job's lock file (`jobs/<id>/job.lock`, harness.locks): a lock whose
holder is dead or whose heartbeat is too old is reported as stale, i.e. the job is pending.
Jobs handed to a scheduler (`--launcher slurm`: `jobs/<id>/launcher/submitted.json`) also show
the scheduler's view (one squeue / sacct call for the whole folder, harness/launch/scheduler.py):
pending with SLURM's reason, running on a node, requeued n times, failed with SLURM's state, exit
code and the task's log file.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.launch import records
from harness.launch.scheduler import SchedulerState, query
from harness.locks import JOB_LOCK, describe_holder, lock_state

#: Scheduler states in which a job waits for its turn (a requeued job waits again).
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD"}


@dataclass
class JobState:
    job_id: str
    state: str  # done | running | failed | pending
    detail: str = ""


def job_states(job_dirs: Iterable[Path]) -> dict[str, JobState]:
    """The state of each job folder, asking the scheduler once for all submitted ones."""
    dirs = [Path(d) for d in job_dirs]
    submissions = {d.name: records.read_submission(d) for d in dirs}
    live = [s for s in submissions.values() if s]
    scheduler = query(live) if live else {}
    return {d.name: job_state(d, submissions[d.name], scheduler) for d in dirs}


def job_state(job_dir: Path, submission: dict | None = None,
              scheduler: dict[str, SchedulerState] | None = None) -> JobState:
    """The state of one job folder (see module doc); `submission` / `scheduler`: its launcher
    record and the scheduler's states (job_states reads both)."""
    job_id = job_dir.name
    launched = _launched(job_dir, submission, scheduler or {})
    if (job_dir / "metrics.json").is_file():
        from harness.store import read_result

        try:  # a truncated result is not done: `harness run` reruns the job
            read_result(job_dir / "metrics.json")
            return JobState(job_id, "done", launched.get("requeued", ""))
        except HarnessError:
            return JobState(job_id, "pending", f"unreadable {job_dir / 'metrics.json'} (truncated?): rerun")
    info, stale = lock_state(job_dir / JOB_LOCK)
    lock_note = ""
    if info is not None:
        if stale is None:
            return JobState(job_id, "running", _join(describe_holder(info), launched.get("id"),
                                                     launched.get("requeued")))
        lock_note = f"stale lock: {stale}"
    error = job_dir / "error.json"
    if error.is_file():
        try:
            record = json.loads(error.read_text())
            message = str(record.get("message", "")).splitlines()
            reason = f"{record.get('type')}: {message[0] if message else ''}"
        except (OSError, ValueError):
            reason = f"unreadable {error}"
        logfile = launched.get("logfile")
        return JobState(job_id, "failed", _join(reason, launched.get("id"), f"log: {logfile}" if logfile else None))
    if launched:
        return JobState(job_id, launched["state"], _join(launched.get("id"), launched.get("detail"),
                                                         launched.get("requeued"), lock_note, launched.get("log")))
    return JobState(job_id, "pending", "started, not finished" + (f"; {lock_note}" if lock_note else ""))


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _launched(job_dir: Path, submission: dict | None, scheduler: dict[str, SchedulerState]) -> dict[str, str]:
    """What the scheduler says of a submitted job: state (running / pending / failed), its id,
    detail, requeues and, for a failure, the log file; {} when the job was never submitted."""
    submission = submission if submission is not None else records.read_submission(job_dir)
    if not submission:
        return {}
    executor, scheduler_id = submission.get("executor", "?"), submission.get("job_id", "?")
    out = {"id": f"{'SLURM' if executor == 'slurm' else executor} job {scheduler_id}"}
    count = records.requeue_count(job_dir)
    if count:
        out["requeued"] = f"requeued {count} time{'s' if count > 1 else ''}"
    found = scheduler.get(scheduler_id, SchedulerState("UNKNOWN", "not asked"))
    if found.state in WAITING:
        out.update(state="pending", detail=f"{found.state.lower()}" + (f" ({found.detail})" if found.detail else ""))
    elif found.state == "UNKNOWN":
        out.update(state="pending", detail=f"scheduler state unknown ({found.detail})")
    elif found.terminal:
        what = "ended without a result" if found.state == "COMPLETED" else found.state
        out.update(state="failed", detail=what + (f" ({found.detail})" if found.detail else ""),
                   log=f"log: {submission.get('stderr')}")
    else:  # RUNNING, COMPLETING, ...: the task has not taken the job's lock yet (or is ending)
        out.update(state="running", detail=f"{found.state.lower()}" + (f" {found.detail}" if found.detail else ""))
    out["logfile"] = str(submission.get("stderr") or "")
    return out


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
    states = job_states(d for d in sorted((root / "jobs").glob("*")) if d.is_dir())
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
