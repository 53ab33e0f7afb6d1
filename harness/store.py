"""Results on disk: `results/<run>/` with the run's resolved request and provenance, one folder
per job (`jobs/<job-id>/config.json`, `metrics.json`, `log.txt`, `work/` checkpoints), and the
summary tables.

Writes are atomic (temp file + rename), a finished job (its metrics.json exists) is never
re-run or overwritten: a rerun skips it, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write_json, atomic_write_text, remove_stale_temps
from harness.jobs import JobSpec
from harness.locks import JOB_LOCK


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def job_dir(self, job: JobSpec) -> Path:
        return self.root / "jobs" / job.job_id

    def job_lock_path(self, job: JobSpec) -> Path:
        """The job's lock file (harness/locks.py): whoever holds it is the job's only writer."""
        return self.job_dir(job) / JOB_LOCK

    def claim_job(self, job: JobSpec, lock: Any) -> None:
        """Called on taking a job's lock: temp files a killed writer left behind are garbage now."""
        remove_stale_temps(self.job_dir(job), recursive=True)

    def is_finished(self, job: JobSpec) -> bool:
        return (self.job_dir(job) / "metrics.json").is_file()

    def write_run(self, request: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Each invocation appends its own record (a rerun or shard never erases another's)."""
        invocations = self.root / "invocations"
        invocations.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(invocations)  # callers hold the folder lock (harness/locks.py)
        remove_stale_temps(self.root)
        stamp = provenance["time_utc"].replace(":", "")
        name = f"{stamp}-{os.getpid()}.json"
        atomic_write_json(invocations / name, {"request": request, "provenance": provenance})

    def start_job(self, job: JobSpec, provenance: dict[str, Any]) -> Path:
        d = self.job_dir(job)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "config.json", {"job": job.to_dict(), "provenance": provenance})
        return d

    def finish_job(self, job: JobSpec, metrics: dict[str, Any], provenance: dict[str, Any]) -> None:
        record = {"job_id": job.job_id, "job": job.to_dict(), "metrics": metrics, "provenance": provenance}
        atomic_write_json(self.job_dir(job) / "metrics.json", record)

    def fail_job(self, job: JobSpec, error: str) -> None:
        atomic_write_text(self.job_dir(job) / "error.txt", error)

    def finished_records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "jobs").glob("*/metrics.json")):
            with open(path) as handle:
                out.append(json.load(handle))
        return out


def default_run_dir(base: Path, protocol: str, dataset: str, profile: str | None) -> Path:
    name = f"{protocol}-{dataset}" + (f"-{profile}" if profile else "")
    return base / name
