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
from typing import TYPE_CHECKING, Any

from harness.atomic import atomic_write_json, remove_stale_temps
from harness.errors import HarnessError, os_error_hint
from harness.jobs.identity import RESULTS_FORMAT
from harness.locks import JOB_LOCK

if TYPE_CHECKING:  # pragma: no cover - typing only: the typed job loads the method configurations (torch)
    from harness.jobs.spec import JobSpec

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
            record = read_result(path)
        except HarnessError:  # truncated (a crash of an older version, a full disk): rerun
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
        _write(invocations / name, record)

    def start_job(self, job: JobSpec, provenance: dict[str, Any]) -> Path:
        d = self.job_dir(job)
        _write(d / "config.json", {"job": job.to_dict(), "provenance": provenance})
        return d

    def finish_job(self, job: JobSpec, metrics: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Write the result, then drop the error record of an earlier failed attempt."""
        record = {"results_format": RESULTS_FORMAT, "job_id": job.job_id, "job": job.to_dict(),
                  "metrics": metrics, "provenance": provenance}
        _write(self.job_dir(job) / "metrics.json", record)
        for name in ERROR_FILES:
            (self.job_dir(job) / name).unlink(missing_ok=True)

    def fail_job(self, job: JobSpec, error: BaseException) -> Path:
        """Record why a job failed (`error.json`); return its path."""
        path = self.job_dir(job) / "error.json"
        _write(path, error_record(job, error))
        return path

    def failed_records(self) -> list[dict[str, Any]]:
        """Error records of jobs that have no result (a later success removes its record)."""
        out = []
        for path in sorted((self.root / "jobs").glob("*/error.json")):
            if (path.parent / "metrics.json").is_file():
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = None
            if not isinstance(record, dict):  # damaged, or someone else's JSON
                record = {"job_id": path.parent.name, "type": "unreadable", "message": str(path)}
            out.append(record)
        return out

    def finished_records(self) -> list[dict[str, Any]]:
        return [read_result(path) for path in sorted((self.root / "jobs").glob("*/metrics.json"))]


def read_result(path: Path) -> dict[str, Any]:
    """A job's metrics.json; a truncated or damaged one is named (`is_finished` never counts it)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HarnessError(f"{path}: unreadable result ({type(err).__name__}: {err}); it does not count as "
                           "finished: rerun the same `harness run` to recompute that job, or delete its folder") from None
    if not isinstance(record, dict):
        raise HarnessError(f"{path}: not a result record (a JSON {type(record).__name__}); delete its folder "
                           "and rerun the same `harness run`")
    missing = _missing_fields(record)
    if missing:
        raise HarnessError(f"{path}: not a harness result (it lacks {', '.join(missing)}); is this a results folder "
                           "of `harness run`? Move the file away, or delete its job folder and rerun the run")
    return record


#: What every result record holds (tables and reports read these): top-level, in `job`, in `metrics`.
RESULT_FIELDS = {"": ("job_id", "job", "metrics"),
                 "job": ("method", "protocol", "dataset", "split", "seed", "schedule"),
                 "metrics": ("evals", "params", "train")}


def _missing_fields(record: dict[str, Any]) -> list[str]:
    """`RESULT_FIELDS` absent from a parsed metrics.json (dotted names), so that a foreign JSON
    file is named as such instead of failing later as a KeyError inside a table."""
    missing = [key for key in RESULT_FIELDS[""] if key not in record]
    for part in ("job", "metrics"):
        inner = record.get(part)
        if isinstance(inner, dict):
            missing += [f"{part}.{key}" for key in RESULT_FIELDS[part] if key not in inner]
        elif part in record:
            missing.append(f"{part} (not an object)")
    return missing


def _write(path: Path, record: dict[str, Any]) -> None:
    """Atomic JSON write; a full disk or a read-only folder is the user's to fix, named in one line
    (the file is left as it was: the atomic writer never leaves a prefix)."""
    try:
        atomic_write_json(path, record)
    except OSError as err:
        raise HarnessError(f"cannot write {path} ({err.strerror or err}): {os_error_hint(err)}, then rerun the same "
                           "command (finished jobs are kept)") from None


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
