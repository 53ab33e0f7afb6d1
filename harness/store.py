"""Results on disk: `results/<run>/` with the run's resolved request and provenance, one folder
per job (`jobs/<job-id>/config.json`, `metrics.json`, `log.txt`, `work/` checkpoints), and the
summary tables.

Writes are atomic (temp file + rename), a finished job (its metrics.json exists, written in the
current RESULTS_FORMAT) is never re-run or overwritten: a rerun skips it, so an interrupted run
resumes where it stopped. A failed job leaves `error.json` (type, message, where, traceback)
instead; a rerun retries it, and its later success removes that record. Folders written by an
older results format are rerun but stay readable by `harness report`.
"""
from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write_json, remove_stale_temps
from harness.jobs import RESULTS_FORMAT, JobSpec
from harness.locks import JOB_LOCK

#: Error records of failed jobs (`error.txt`: written by results format 1).
ERROR_FILES = ("error.json", "error.txt")


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
        """metrics.json exists and was written in the current results format."""
        path = self.job_dir(job) / "metrics.json"
        if not path.is_file():
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return record_format(record) >= RESULTS_FORMAT

    def write_run(self, request: dict[str, Any], provenance: dict[str, Any],
                  job_ids: list[str] | None = None) -> None:
        """Each invocation appends its own record (a rerun or shard never erases another's),
        with the ids of the jobs it will run (what `harness status` lists as pending)."""
        invocations = self.root / "invocations"
        invocations.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(invocations)  # callers hold the folder lock (harness/locks.py)
        remove_stale_temps(self.root)
        stamp = provenance["time_utc"].replace(":", "")
        name = f"{stamp}-{os.getpid()}.json"
        record = {"request": request, "provenance": provenance}
        if job_ids is not None:
            record["job_ids"] = job_ids
        atomic_write_json(invocations / name, record)

    def start_job(self, job: JobSpec, provenance: dict[str, Any]) -> Path:
        d = self.job_dir(job)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "config.json", {"job": job.to_dict(), "provenance": provenance})
        return d

    def finish_job(self, job: JobSpec, metrics: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Write the result, then drop the error record of an earlier failed attempt."""
        record = {"results_format": RESULTS_FORMAT, "job_id": job.job_id, "job": job.to_dict(),
                  "metrics": metrics, "provenance": provenance}
        atomic_write_json(self.job_dir(job) / "metrics.json", record)
        for name in ERROR_FILES:
            (self.job_dir(job) / name).unlink(missing_ok=True)

    def fail_job(self, job: JobSpec, error: BaseException) -> Path:
        """Record why a job failed (`error.json`); return its path."""
        path = self.job_dir(job) / "error.json"
        atomic_write_json(path, error_record(job, error))
        return path

    def failed_records(self) -> list[dict[str, Any]]:
        """Error records of jobs that have no result (a later success removes its record)."""
        out = []
        for path in sorted((self.root / "jobs").glob("*/error.json")):
            if (path.parent / "metrics.json").is_file():
                continue
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                out.append({"job_id": path.parent.name, "type": "unreadable", "message": str(path)})
        return out

    def finished_records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "jobs").glob("*/metrics.json")):
            with open(path) as handle:
                out.append(json.load(handle))
        return out


def record_format(record: dict[str, Any]) -> int:
    """Results format of a metrics.json record (1: written before the field existed)."""
    return int(record.get("results_format", 1))


def error_record(job: JobSpec, error: BaseException) -> dict[str, Any]:
    """type, message, where (innermost frame) and the traceback of a job's failure."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
    return {"results_format": RESULTS_FORMAT, "job_id": job.job_id, "method": job.method, "split": job.split,
            "type": type(error).__name__, "message": str(error), "where": where,
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))}


def default_run_dir(base: Path, protocol: str, dataset: str, profile: str | None) -> Path:
    if dataset.startswith("folder:"):  # --dataset folder:/videos/mine -> results/<protocol>-folder-mine
        dataset = "folder-" + Path(dataset[len("folder:"):]).name
    name = f"{protocol}-{dataset}" + (f"-{profile}" if profile else "")
    return base / name
