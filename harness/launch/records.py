"""What a job folder keeps about its launches: `launcher/submitted.json` (the scheduler's job id,
the executor, the submitit folder and log paths, written by the submitting command) and one file
per event in `launcher/events/` (each start of the task, each requeue with where it stopped),
written by the task. One file per event, each written atomically: two writers never share a file
and a crash never leaves a half-written record.

`harness status` reads them (with the scheduler's own state) to say pending / running / requeued
n times / failed with the reason and the log path.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write_json

FOLDER = "launcher"
SUBMITTED = "submitted.json"
EVENTS = "events"
STOP_FILE = "stop"
JOB_FILE = "job.json"


def launcher_dir(job_dir: Path) -> Path:
    return Path(job_dir) / FOLDER


def write_submission(job_dir: Path, record: dict[str, Any]) -> Path:
    path = launcher_dir(job_dir) / SUBMITTED
    atomic_write_json(path, {**record, "submitted_utc": _utc()})
    return path


def read_submission(job_dir: Path) -> dict[str, Any] | None:
    path = launcher_dir(job_dir) / SUBMITTED
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def add_event(job_dir: Path, kind: str, **fields: Any) -> Path:
    """`kind` = start | requeue | finish; the scheduler job id, host and pid are added."""
    now = time.time()
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{int(now * 1e6) % 1000000:06d}-{os.getpid()}-{kind}.json"
    path = launcher_dir(job_dir) / EVENTS / name
    atomic_write_json(path, {"kind": kind, "time_utc": _utc(now), "host": socket.gethostname(), "pid": os.getpid(),
                             **fields})
    return path


def events(job_dir: Path, since: str | None = None) -> list[dict[str, Any]]:
    """Events in time order (only those at or after `since`, a UTC time string, when given)."""
    out = []
    for path in sorted((launcher_dir(job_dir) / EVENTS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if since is None or record.get("time_utc", "") >= since:
            out.append(record)
    return out


def requeue_count(job_dir: Path) -> int:
    """Requeues of the current submission: the task's own requeue records, or its starts after
    the first (a requeue SLURM did itself, e.g. preemption in REQUEUE mode, shows only as a start)."""
    submission = read_submission(job_dir) or {}
    found = events(job_dir, submission.get("submitted_utc"))
    starts = sum(e["kind"] == "start" for e in found)
    requeues = sum(e["kind"] == "requeue" for e in found)
    return max(requeues, starts - 1, 0)


def _utc(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1e6) % 1000000:06d}Z"
