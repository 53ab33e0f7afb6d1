"""Submitting a run's jobs with submitit, one scheduler task per job, and waiting for them.

SLURM: one job array per submission (`--array=0-N%P`, P = `array_parallelism`), the sbatch
script written by submitit from the launcher options; each task runs `harness.launch.task.JobTask`.
The local executor (`executor: local`, for tests and laptops) runs each job as its own
subprocess tree through the very same task code; with `--wait` at most P at a time.

A job is not submitted when it is finished, when its lock is held by a live run, or when an
earlier submission of it is still pending or running: a job never runs twice at once (and the
task itself takes the job's lock before it runs).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.launch import records
from harness.launch.config import INSTALL_HINT, LauncherConfig
from harness.launch.scheduler import SchedulerState, query


def require_submitit() -> Any:
    """The submitit module, or one line saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise HarnessError(INSTALL_HINT) from None
    return submitit


@dataclasses.dataclass
class Submitted:
    """A submission: which jobs went to the scheduler (job id -> scheduler id) and which not (why)."""

    store: Any
    jobs: list  # JobSpec of every job handed over
    scheduler_ids: dict[str, str]
    skipped: dict[str, str]
    handles: dict[str, Any]  # job id -> submitit Job (this process only)
    waiting: list  # local executor with --wait: jobs submitted as others finish


def submit(jobs: list, store: Any, request: Any, config: LauncherConfig, *, wait: bool = False,
           log: Callable[[str], None] | None = None) -> Submitted:
    """Submit every job of `jobs` that needs running (see module doc); record each submission in
    its job folder and the invocation in the results folder (for `harness status`)."""
    submitit = require_submitit()
    from harness.locks import folder_lock, lock_state
    from harness.provenance import provenance

    log = log or (lambda text: print(text, file=sys.stderr))
    todo, skipped = [], {}
    live = _live_submissions(store, jobs)
    for job in jobs:
        if store.is_finished(job):
            skipped[job.job_id] = "finished earlier"
            continue
        holder, stale = lock_state(store.job_lock_path(job))
        if holder is not None and stale is None:
            skipped[job.job_id] = "running (lock held by a live run)"
            continue
        if job.job_id in live:
            skipped[job.job_id] = f"already submitted ({live[job.job_id]})"
            continue
        todo.append(job)
    with folder_lock(store.root):
        store.write_run(dataclasses.asdict(request), provenance(), [job.job_id for job in jobs])
    for job_id, why in skipped.items():
        log(f"{job_id}: {why}, not submitted")
    executor = make_executor(submitit, config, store.root)
    result = Submitted(store, todo, {}, skipped, {}, [])
    if not todo:
        return result
    throttle = config.executor == "local" and wait and len(todo) > config.array_parallelism
    first = todo[:config.array_parallelism] if throttle else todo
    result.waiting = todo[len(first):]
    _submit_batch(executor, first, store, config, result)
    where = f"array {next(iter(result.scheduler_ids.values())).split('_')[0]}" if config.executor == "slurm" \
        else "local executor"
    log(f"submitted {len(first)} job(s) ({where}, at most {config.array_parallelism} at a time)"
        + (f"; {len(result.waiting)} more as those finish" if result.waiting else ""))
    if config.executor == "local" and not wait and len(todo) > config.array_parallelism:
        log(f"note: the local executor starts all {len(todo)} jobs now (array_parallelism limits SLURM arrays, "
            "and local runs with --wait)")
    return result


def make_executor(submitit: Any, config: LauncherConfig, results_dir: Path) -> Any:
    folder = Path(config.folder) if config.folder else Path(results_dir) / "slurm"
    python = config.python
    if config.executor == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=config.max_timeouts, python=python)
        executor.update_parameters(timeout_min=config.minutes, gpus_per_node=config.gpus_per_job,
                                   tasks_per_node=1, signal_delay_s=config.signal_delay_s,
                                   **({"setup": list(config.setup)} if config.setup else {}))
        return executor
    if config.executor != "slurm":
        raise HarnessError(f"launcher executor {config.executor!r}: slurm or local")
    try:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=config.max_timeouts, python=python)
    except RuntimeError as err:  # no srun on PATH
        raise HarnessError(f"--launcher slurm: {err} (run on a SLURM login node, or set executor: local to test)") \
            from None
    params: dict[str, Any] = {"job_name": config.job_name, "time": config.minutes, "nodes": 1,
                              "ntasks_per_node": 1, "cpus_per_task": config.cpus,
                              "signal_delay_s": config.signal_delay_s, "array_parallelism": config.array_parallelism}
    if config.gpus_per_job:
        params["gpus_per_node"] = config.gpus_per_job
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(config, name):
            params[name] = getattr(config, name)
    if config.mem_gb is not None:
        gb = config.mem_gb
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    if config.setup:
        params["setup"] = list(config.setup)
    extra = config.sbatch_parameters()
    if extra:
        params["additional_parameters"] = extra
    try:
        executor.update_parameters(**params)
    except ValueError as err:
        raise HarnessError(f"--launcher slurm: submitit refused the options: {str(err).splitlines()[0]}") from None
    return executor


def _task(job: Any, store: Any, config: LauncherConfig) -> Any:
    from harness.launch.task import JobTask

    return JobTask(job.to_dict(), str(store.root.resolve()), processes=config.processes,
                   signal_name=config.signal, grace_s=config.grace_s, pythonpath=os.environ.get("PYTHONPATH"))


def _submit_batch(executor: Any, jobs: list, store: Any, config: LauncherConfig, result: Submitted) -> None:
    """One array (SLURM) / one process each (local) for `jobs`; each job folder records it."""
    if config.executor == "local":
        handles = [executor.submit(_task(job, store, config)) for job in jobs]
    else:
        with executor.batch():
            handles = [executor.submit(_task(job, store, config)) for job in jobs]
    for job, handle in zip(jobs, handles):
        paths = handle.paths
        records.write_submission(store.job_dir(job), {
            "executor": config.executor, "job_id": str(handle.job_id), "folder": str(executor.folder),
            "stdout": str(paths.stdout), "stderr": str(paths.stderr), "result_pickle": str(paths.result_pickle),
            "launcher": config.to_dict()})
        result.scheduler_ids[job.job_id] = str(handle.job_id)
        result.handles[job.job_id] = handle


def _live_submissions(store: Any, jobs: list) -> dict[str, str]:
    """Jobs whose recorded submission the scheduler still runs or queues: {job id: 'SLURM 42_1 PENDING'}."""
    found = {job.job_id: records.read_submission(store.job_dir(job)) for job in jobs}
    found = {k: v for k, v in found.items() if v}
    if not found:
        return {}
    states = query(found.values())
    out = {}
    for job_id, record in found.items():
        state = states.get(record["job_id"], SchedulerState("UNKNOWN"))
        if state.state not in ("UNKNOWN",) and not state.terminal:
            out[job_id] = f"{record['executor']} job {record['job_id']} {state.state.lower()}"
    return out


def wait_for(submitted: Submitted, config: LauncherConfig, log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Poll until every submitted job is done or failed, printing a line whenever the counts
    change; submit the local executor's queued jobs as slots free up. Returns {job id: state}."""
    from harness.reports.status import job_states

    log = log or (lambda text: print(text, file=sys.stderr))
    store, pending = submitted.store, list(submitted.waiting)
    all_jobs = list(submitted.jobs)
    executor = make_executor(require_submitit(), config, store.root) if pending else None
    last = None
    while True:
        for handle in submitted.handles.values():  # the local executor's controllers are our children: reap them
            if hasattr(handle, "_process"):
                handle.get_info()
        states = job_states([store.job_dir(job) for job in all_jobs])
        active = sum(states[jid].state in ("running", "pending") for jid in submitted.scheduler_ids)
        while pending and executor is not None and active < config.array_parallelism:
            batch = pending[:config.array_parallelism - active]
            pending = pending[len(batch):]
            _submit_batch(executor, batch, store, config, submitted)
            active += len(batch)
            states.update(job_states([store.job_dir(job) for job in batch]))
        for job in pending:  # not handed to the executor yet
            states[job.job_id] = dataclasses.replace(states[job.job_id], state="pending", detail="queued here")
        counts = {k: sum(s.state == k for s in states.values()) for k in ("done", "running", "pending", "failed")}
        requeued = sum(1 for s in states.values() if "requeued" in s.detail)
        line = ", ".join(f"{v} {k}" for k, v in counts.items()) + (f" ({requeued} requeued)" if requeued else "")
        if line != last:
            log(f"[{time.strftime('%H:%M:%S')}] {len(all_jobs)} job(s): {line}")
            last = line
        if not pending and counts["running"] == 0 and counts["pending"] == 0:
            return {jid: s.state for jid, s in states.items()}
        time.sleep(config.poll_s)
