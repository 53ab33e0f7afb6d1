"""What one SLURM task runs: one harness job, exactly as `harness run` would run it, plus the
end-of-allocation protocol (docs/clusters.md, "Preemption and time limits").

The task is a `submitit.helpers.Checkpointable`: when SLURM's signal arrives (USR2, `--signal`
before the time limit; or `scancel --signal USR2`), the job stops after its current optimiser
update with a checkpoint of that boundary (harness/preemption.py), the task releases the job's
lock, records a `requeue` event and hands over to submitit's own handler, which pickles the task
again (its `checkpoint()`: the same job; the resume comes from the job folder) and requeues it
(`scontrol requeue`; the local executor: exit 144, restarted by its controller). The requeued
task resumes from that checkpoint. Outside the training loop the signal stops at once and the
job resumes from its last checkpoint.

Several GPUs: the task runs torchrun (`harness.launch.agent`, which ignores the signal so the
agent survives it) with one worker per process (`harness.launch.worker`); every rank handles the
signal itself (SLURM signals every process of the step) and the task also writes the stop file
the ranks poll, so each rank learns of it either way, and they agree on the update to stop after
(harness.preemption.stop_agreed). A stop that takes longer than the grace period (signal delay
minus 30 s) is cut short: the task terminates torchrun and requeues from the last checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import submitit
from submitit.core.job_environment import JobEnvironment, SignalHandler

from harness import preemption
from harness.atomic import atomic_write_json, atomic_write_text
from harness.errors import HarnessError
from harness.launch import records


class JobTask(submitit.helpers.Checkpointable):
    """One harness job in one scheduler task. Pickled by submitit: plain data only."""

    def __init__(self, job: dict[str, Any], results_dir: str, processes: int = 1, signal_name: str = "USR2",
                 grace_s: float = 90.0, pythonpath: str | None = None) -> None:
        self.job = job
        self.results_dir = results_dir
        self.processes = processes
        self.signal_name = signal_name
        self.grace_s = grace_s
        self.pythonpath = pythonpath

    # submitit calls checkpoint() (inherited: the same task again) from its signal handler.

    def __call__(self) -> dict[str, Any]:
        from harness.jobs.spec import JobSpec
        from harness.locks import LAUNCHER_JOB_ENV, FileLock, describe_holder
        from harness.store import RunStore

        signum = preemption.signal_number(self.signal_name)
        submitit_handler = signal.getsignal(signum)  # submitit's checkpoint-and-requeue, kept for the end
        scheduler_job = _scheduler_job_id()
        os.environ[LAUNCHER_JOB_ENV] = scheduler_job
        store = RunStore(Path(self.results_dir))
        job = JobSpec.from_dict(self.job)
        job_dir = store.job_dir(job)
        records.add_event(job_dir, "start", scheduler_job=scheduler_job, processes=self.processes)
        if store.is_finished(job):
            return {"job_id": job.job_id, "status": "finished earlier"}
        lock = FileLock(store.job_lock_path(job))
        if not lock.acquire():
            return {"job_id": job.job_id, "status": f"held by another run ({describe_holder(lock.holder or {})})"}
        stopped: preemption.Preempted | None = None
        where: str | None = None
        try:
            store.claim_job(job, lock)
            if self.processes > 1:
                finished, stopped = self._run_torchrun(job, store, signum)
            else:
                preemption.enable(signum)
                try:
                    finished = _run_here(job, store)
                except preemption.Preempted as err:
                    finished, stopped = False, err
            where = preemption.last_boundary()
        finally:
            preemption.reset()
            lock.release()
        if stopped is not None:
            records.add_event(job_dir, "requeue", scheduler_job=scheduler_job, reason=str(stopped), where=where)
            print(f"harness: job {job.job_id}: {stopped}; requeueing", file=sys.stderr, flush=True)
            _requeue(submitit_handler, signum)
        if not finished:
            error = job_dir / "error.json"
            raise RuntimeError(f"job {job.job_id} failed (details: {error})")
        return {"job_id": job.job_id, "status": "finished"}

    # -- several processes ---------------------------------------------------------------------
    def _run_torchrun(self, job: Any, store: Any, signum: int) -> tuple[bool, preemption.Preempted | None]:
        """Run the job on `processes` torchrun workers; (finished, the stop if preempted)."""
        job_dir = store.job_dir(job)
        folder = records.launcher_dir(job_dir)
        stop_file = folder / records.STOP_FILE
        stop_file.unlink(missing_ok=True)  # a stale request of an earlier attempt must not stop this one
        spec = folder / records.JOB_FILE
        atomic_write_json(spec, {"job": self.job, "results_dir": self.results_dir})
        env = dict(os.environ)
        env.update({preemption.PREEMPTIBLE_ENV: self.signal_name, preemption.STOP_FILE_ENV: str(stop_file)})
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        command = [sys.executable, "-m", "harness.launch.agent", "--standalone", "--nproc-per-node",
                   str(self.processes), "-m", "harness.launch.worker", str(spec)]
        proc = subprocess.Popen(command, env=env)
        asked = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if asked.is_set():
                return
            asked.set()
            atomic_write_text(stop_file, signal.Signals(signum).name + "\n")  # rank 0 polls it per update
            timer = threading.Timer(self.grace_s, _terminate, args=(proc,))
            timer.daemon = True
            timer.start()

        previous = signal.signal(signum, on_signal)
        try:
            code = proc.wait()
        finally:
            signal.signal(signum, previous)
        if store.is_finished(job):
            return True, None
        if asked.is_set() or code == preemption.EXIT_PREEMPTED:
            preemption.note_boundary(_read_boundary(folder))
            return False, preemption.Preempted(f"torchrun stopped (exit {code}) on the allocation's end")
        if not (job_dir / "error.json").is_file():
            store.fail_job(job, HarnessError(f"torchrun exited with status {code} before the job finished; "
                                             f"see the task's log"))
        return False, None


def _run_here(job: Any, store: Any) -> bool:
    from harness import api

    return api.run_claimed_job(job, store, progress=True)


def _terminate(proc: subprocess.Popen) -> None:
    """The stop took longer than the grace period: end torchrun (it ends its workers)."""
    if proc.poll() is None:
        print("harness: no update boundary within the grace period; ending the job's processes (it resumes from "
              "its last checkpoint)", file=sys.stderr, flush=True)
        proc.terminate()


def _read_boundary(folder: Path) -> str | None:
    try:
        return (folder / "stopped_at").read_text().strip() or None
    except OSError:
        return None


def _scheduler_job_id() -> str:
    try:
        return str(JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - called outside a submitit job (tests): the process is the attempt
        return f"pid{os.getpid()}"


def _requeue(handler: Any, signum: int) -> None:
    """Hand over to submitit's handler (pickle the task again, requeue, exit); outside submitit
    (no such handler) the stop propagates."""
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, SignalHandler):
        handler(signum, None)
    raise preemption.Preempted("stopped for the allocation's end (not inside a submitit job: not requeued)")
