"""Running a run's jobs elsewhere: `--launcher slurm` submits one SLURM task per job through
submitit (job arrays with a concurrency limit), with preemption and time limits handled by
stopping at an update boundary and requeueing (docs/clusters.md).

Modules: `config` (the launcher options, from the command line and a YAML file), `records`
(what a job folder keeps about its submissions and attempts), `scheduler` (states from squeue /
sacct or the local executor, for `harness status` and `--wait`), `submit` (submission and
waiting; imports submitit), `task` (what runs inside a SLURM task), `agent` / `worker` (torchrun
inside a task). submitit is an optional dependency: only `submit` and `task` import it.
"""
