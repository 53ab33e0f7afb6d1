"""The scheduler's view of submitted jobs, without submitit: SLURM's from `squeue` (live jobs,
with the pending reason) and `sacct` (finished ones, with the exit code), one call each for
every job of a results folder; submitit's local executor's from the controller process and its
result file. `harness status` and `--wait` read this beside the job folders.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: SLURM states after which a job does nothing more (its folder has a result or it failed).
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT", "ENDED"}


@dataclass
class SchedulerState:
    state: str  # SLURM's state name (PENDING, RUNNING, ...), ENDED (local: no result), UNKNOWN
    detail: str = ""  # pending reason, exit code, node

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def query(submissions: Iterable[dict[str, Any]]) -> dict[str, SchedulerState]:
    """{scheduler job id: state} for submission records (harness/launch/records.py)."""
    records = list(submissions)
    slurm = [r["job_id"] for r in records if r.get("executor") == "slurm"]
    out = _slurm_states(slurm) if slurm else {}
    for record in records:
        if record.get("executor") == "local":
            out[record["job_id"]] = _local_state(record)
    return out


def _array_ids(text: str) -> list[str]:
    """'4242_[0-2,5%2]' -> ['4242_0', '4242_1', '4242_2', '4242_5']; other ids as they are."""
    match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", text)
    if not match:
        return [text]
    ids = []
    for part in match.group(2).split(","):
        low, _, high = part.partition("-")
        ids.extend(f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1))
    return ids


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _slurm_states(job_ids: list[str]) -> dict[str, SchedulerState]:
    mains = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, SchedulerState] = {}
    accounting = _run(["sacct", "--noheader", "--parsable2", "--format", "JobID,State,ExitCode,NodeList",
                       "--jobs", ",".join(mains)])
    for line in (accounting or "").splitlines():
        parts = line.split("|")
        if len(parts) < 3 or "." in parts[0]:
            continue  # job steps (4242_0.batch) repeat their job
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        detail = f"exit code {parts[2]}" if state in TERMINAL and parts[2] not in ("", "0:0") else ""
        if state == "RUNNING" and len(parts) > 3 and parts[3]:
            detail = f"on {parts[3]}"
        for job_id in _array_ids(parts[0]):
            out[job_id] = SchedulerState(state, detail)
    queue = _run(["squeue", "--noheader", "--format", "%i|%T|%r|%N", "--jobs", ",".join(mains)])
    for line in (queue or "").splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        state, reason = parts[1].strip(), parts[2].strip()
        node = parts[3].strip() if len(parts) > 3 else ""
        detail = reason if state == "PENDING" and reason not in ("", "None") else (f"on {node}" if node else "")
        for job_id in _array_ids(parts[0].strip()):
            out[job_id] = SchedulerState(state, detail)
    if accounting is None and queue is None:
        why = "no squeue / sacct on this machine" if not shutil.which("squeue") else "squeue / sacct failed"
        return {j: SchedulerState("UNKNOWN", why) for j in job_ids}
    for job_id in job_ids:
        # in neither: squeue forgets finished jobs and sacct may be off on the cluster
        out.setdefault(job_id, SchedulerState("UNKNOWN", "not in squeue" + ("" if accounting is not None
                                                                             else "; no accounting (sacct)")))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _local_state(record: dict[str, Any]) -> SchedulerState:
    result = record.get("result_pickle")
    if result and os.path.exists(result):
        try:
            with open(result, "rb") as handle:
                outcome, value = pickle.load(handle)
        except Exception as err:  # noqa: BLE001 - a result written by another version
            return SchedulerState("COMPLETED", f"result unreadable ({type(err).__name__})")
        if outcome == "success":
            return SchedulerState("COMPLETED")
        lines = [line for line in str(value).splitlines() if line.strip()]
        return SchedulerState("FAILED", lines[-1] if lines else "error")
    try:
        pid = int(record["job_id"])
    except (KeyError, ValueError):
        return SchedulerState("UNKNOWN", "no process id recorded")
    if _pid_alive(pid):
        return SchedulerState("RUNNING", f"local process {pid}")
    return SchedulerState("ENDED", f"local process {pid} ended without a result")
