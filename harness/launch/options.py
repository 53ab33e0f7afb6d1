"""The launcher's command-line options (shared by `harness run`, `eval` and `reproduce`) and
what a command does with a launcher: submit, then return or wait and print the table."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.errors import HarnessError
from harness.launch.config import LauncherConfig, load_launcher_config

#: Command-line option -> LauncherConfig field (the YAML key).
FLAGS = {"partition": "partition", "account": "account", "qos": "qos", "time": "time",
         "gpus_per_job": "gpus_per_job", "cpus_per_job": "cpus_per_job", "mem_per_job": "mem_per_job",
         "constraint": "constraint", "sbatch": "sbatch", "array_parallelism": "array_parallelism"}


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the jobs run (docs/clusters.md)")
    group.add_argument("--launcher", default="local", choices=("local", "slurm"),
                       help="local: here, one job after another (default); slurm: one SLURM task per job through "
                            "submitit (job arrays), preempted / timed-out jobs requeue and resume")
    group.add_argument("--launcher-config", default=None, metavar="YAML",
                       help="launcher options from a YAML file (keys as below and in docs/clusters.md; "
                            "`executor: local` runs the tasks as local subprocesses, for testing)")
    group.add_argument("--partition", default=None)
    group.add_argument("--account", default=None)
    group.add_argument("--qos", default=None)
    group.add_argument("--time", default=None, help="time limit per job: minutes or [D-]HH:MM[:SS] (default 24:00:00)")
    group.add_argument("--gpus-per-job", type=int, default=None, help="GPUs per job (default 1; >1: torchrun)")
    group.add_argument("--cpus-per-job", type=int, default=None, help="CPUs per job (default 8 per GPU)")
    group.add_argument("--mem-per-job", default=None, help="memory per job, e.g. 64G")
    group.add_argument("--constraint", default=None, help="SLURM --constraint")
    group.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="extra sbatch option, e.g. --sbatch=--exclusive (repeatable)")
    group.add_argument("--array-parallelism", type=int, default=None, help="jobs of a submission running at once "
                       "(default 32)")
    group.add_argument("--launcher-set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other launcher option (setup, signal, signal_delay_s, max_timeouts, folder, ...)")
    group.add_argument("--wait", action="store_true", help="--launcher slurm: wait for the jobs, printing progress, "
                       "then print the table (default: return after submitting)")


def launcher_config(args: argparse.Namespace) -> LauncherConfig | None:
    """The launcher options of a command, or None for the local launcher (which takes none:
    giving one is an error naming it). Without submitit, `--launcher slurm` is one line saying
    how to install it."""
    given = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) not in (None, [])}
    if args.launcher == "local":
        extra = [f"--{k.replace('_', '-')}" for k in given] + (["--launcher-config"] if args.launcher_config else []) \
            + (["--launcher-set"] if args.launcher_set else []) + (["--wait"] if args.wait else [])
        if extra:
            raise HarnessError(f"{', '.join(extra)}: only with --launcher slurm")
        return None
    from harness.launch.submit import require_submitit

    require_submitit()
    return load_launcher_config(args.launcher_config, given, args.launcher_set)


def launch(planned: Any, config: LauncherConfig, wait: bool) -> int:
    """Submit a plan's jobs (harness.api.plan: the jobs whose data is unusable are recorded as
    failed here, as `harness run` does, and not submitted); without `wait` return at once, else
    wait, print the run's table. Exit status as `harness run`: 2 if a job's data was unusable, 1
    if a job failed, else 0."""
    from harness.launch.submit import submit, wait_for
    from harness.validate import record_bad_data

    store = planned.store
    bad = [job for job in planned.jobs if job.job_id in planned.bad_data]
    for job in bad:
        record_bad_data(store, job, planned.bad_data[job.job_id], write=True)
    submitted = submit(planned.runnable, store, planned.request, config, wait=wait)
    root = store.root
    if not wait:
        print(f"results: {root}\n  progress: harness status {root}\n  tables when jobs finish: harness report {root}")
        return 2 if bad else 0
    states = wait_for(submitted, config)
    from harness.locks import folder_lock
    from harness.report import write_summary

    with folder_lock(root):
        text, path = write_summary(root, store.finished_records(), store.failed_records())
    print(text)
    print(f"results: {root} (table: {path})")
    failed = [job_id for job_id, state in states.items() if state == "failed"]
    if failed:
        print(f"{len(failed)} job(s) failed: harness status {root}", file=sys.stderr)
    return 2 if bad else 1 if failed else 0
