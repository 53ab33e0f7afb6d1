"""The programmatic API: what `harness run / params / bench` do, as functions.

Why a module of its own: the CLI, the order-pair benchmark and the tests all need to run jobs,
count parameters and benchmark; re-entering the CLI through argv strings and exit codes loses the
error and couples everything to argparse. Here each command is a function of plain values that
returns data (a `RunStore`, rows); `harness/cli.py` only parses options and prints. Nothing here
prints results: a run reports progress per job on stderr, like `harness run`, and writes its
tables into the results folder (`summary.md`, which the CLI prints).

Heavy imports (torch, mmengine) happen inside the functions, so importing this module is free.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.defaults import DEFAULT_SEED, EMBEDDED_BACKBONE, REAL_BACKBONE, SYNTHETIC_BACKBONES
from harness.errors import ConfigurationError, HarnessError


def _method_names(methods: str | Sequence[str]) -> list[str]:
    """'msta,aim' / 'all' / a list -> validated names (unknown ones raise with suggestions)."""
    from methods.registry import parse_method_list

    return parse_method_list(methods if isinstance(methods, str) else ",".join(methods))


# -- run ---------------------------------------------------------------------------------------
def request(methods: str | Sequence[str], protocol: str, *, dataset: str = "embedded", backbone: str | None = None,
            pretrained: str | None = None, sets: Sequence[str] = (), profile: str | None = None,
            seed: int = DEFAULT_SEED, **fields: Any) -> Any:
    """A `RunRequest` with `harness run`'s defaults: the embedded dataset runs the project's
    pretrained tiny CLIP (`synthetic`) under the `embedded` profile, real datasets ViT-B/16;
    `pretrained="random"` means no weights. `sets` are `--set` items; `fields` are the other
    RunRequest fields (splits, shots, frames, schedule_kind, data_root, splits_root, cache_dir)."""
    from harness.data.datasets import get_dataset
    from harness.jobs import RunRequest, default_profile
    from harness.settings import parse_set_args

    names = _method_names(methods)
    method_opts, schedule, data = parse_set_args(list(sets), names)
    backbone = backbone or (EMBEDDED_BACKBONE if get_dataset(dataset).generated else REAL_BACKBONE)
    if pretrained is None and backbone in SYNTHETIC_BACKBONES:
        pretrained = "synthetic"
    if pretrained == "random":
        pretrained = None
    return RunRequest(methods=names, protocol=protocol, dataset=dataset, backbone=backbone, pretrained=pretrained,
                      splits=fields.pop("splits", None), seed=seed, method_options=method_opts,
                      schedule_overrides=schedule, data_overrides=data,
                      profile=profile or default_profile(dataset), **fields)


def sweep_jobs(req: Any, set_lists: Sequence[Sequence[str]]) -> list:
    """Every job of `req` once per list of `--set` items (a `--sweep` grid: each list is the
    run's own items plus one grid point), in order."""
    from harness.jobs import expand_jobs
    from harness.settings import parse_set_args

    jobs: list = []
    for items in set_lists:
        m_opts, sched, dat = parse_set_args(list(items), req.methods)
        jobs.extend(expand_jobs(dataclasses.replace(req, method_options=m_opts, schedule_overrides=sched,
                                                    data_overrides=dat)))
    return jobs


def default_out(req: Any) -> Path:
    """results/<protocol>-<dataset>[-<profile>]"""
    from harness.store import default_run_dir

    return default_run_dir(Path("results"), req.protocol, req.dataset, req.profile)


def run(req: Any, out: str | Path | Any | None = None, *, jobs: Sequence[Any] | None = None,
        progress: bool = True) -> Any:
    """Run every unfinished job of `req` (or the given `jobs`: a sweep or a shard of it) into the
    results folder `out` (a path or a RunStore; default `default_out(req)`), rewrite its tables,
    and return its `RunStore`. A failing job is recorded in its error.json and the run goes on;
    `failures(store, jobs)` lists them. A `ConfigurationError` (the request cannot run at all)
    is raised."""
    from harness.jobs import expand_jobs
    from harness.store import RunStore

    store = out if isinstance(out, RunStore) else RunStore(Path(out) if out is not None else default_out(req))
    run_jobs(list(jobs) if jobs is not None else expand_jobs(req), store, req, progress)
    return store


def run_jobs(jobs: list, store: Any, req: Any, progress: bool = True) -> list:
    """Run every unfinished job; a failing job (a crash, a bad file, a non-finite loss) is
    recorded in its error.json and the run goes on with the next. Returns the jobs that failed
    in this process."""
    from harness.distributed import rank0 as is_rank0
    from harness.locks import claim_jobs, folder_lock
    from harness.provenance import provenance

    prov = provenance()
    rank0 = is_rank0()
    if rank0:
        with folder_lock(store.root):
            store.write_run(dataclasses.asdict(req), prov, [job.job_id for job in jobs])
    failed = []
    # One writer per job: jobs another live run holds are skipped, then waited for (harness/locks.py).
    for number, job in claim_jobs(jobs, store.job_lock_path, store.claim_job):
        tag = f"[{number}/{len(jobs)}] {job.job_id}"
        if store.is_finished(job):
            print(f"{tag}: finished earlier, skipped", file=sys.stderr)
            continue
        if not _run_one_job(job, store, prov, tag, rank0, progress):
            failed.append(job)
    if rank0:
        with folder_lock(store.root):
            _write_summary(store)
    return failed


def _run_one_job(job: Any, store: Any, prov: dict[str, Any], tag: str, rank0: bool, progress: bool) -> bool:
    """Run one job and record its result or its error; True if it finished."""
    from harness.convert.evaluate import model_source
    from harness.engine.runner import run_job

    print(f"{tag} ({job.method}, {job.protocol}, split {job.split})", file=sys.stderr)
    job_dir = store.start_job(job, prov) if rank0 else store.job_dir(job)
    try:
        metrics = run_job(job, job_dir, progress=progress and rank0, source=model_source(job))
    except ConfigurationError:
        raise
    except Exception as err:  # one job's failure must not lose the others' results
        where = store.fail_job(job, err) if rank0 else store.job_dir(job) / "error.json"
        kind = "" if isinstance(err, HarnessError) else f"{type(err).__name__}: "
        print(f"  job {job.job_id} failed: {kind}{err} (details: {where})", file=sys.stderr)
        return False
    if rank0:
        store.finish_job(job, metrics, prov)
        line = ", ".join(f"{name} top1 {ev['top1']:.2f}" for name, ev in metrics["evals"].items() if ev)
        print(f"  {line}", file=sys.stderr)
    return True


def _write_summary(store: Any) -> Path:
    """(Re)write the run's tables from every finished job, listing the jobs that failed."""
    from harness.report import write_summary

    return write_summary(store.root, store.finished_records(), store.failed_records())[1]


def failures(store: Any, jobs: Sequence[Any]) -> list[dict[str, Any]]:
    """Error records (type, message, where, traceback) of those `jobs` that have no result."""
    wanted = {job.job_id for job in jobs}
    return [record for record in store.failed_records() if record.get("job_id") in wanted]


# -- evaluate ----------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalRequest:
    """What `harness eval` evaluates: a checkpoint (converted release or a run's) under a
    protocol, with no training. Field names are the command's options; method, backbone and
    method options come from the checkpoint (given ones must match it)."""

    checkpoint: str
    protocol: str
    dataset: str = "embedded"
    method: str | None = None
    backbone: str | None = None
    pretrained: str | None = None  # where the checkpoint's backbone weights are now, if they moved
    splits: list[int] | None = None
    shots: list[int] | None = None
    seed: int | None = None  # default: the run's seed for a run checkpoint
    sets: list[str] = dataclasses.field(default_factory=list)  # schedule.* / data.* only
    profile: str | None = None
    out: str | None = None  # default results/eval-<protocol>-<dataset>[-<profile>]
    data_root: str | None = None
    splits_root: str | None = None
    cache: str | None = None


def evaluation_jobs(ev: EvalRequest) -> tuple[list, Any, Path]:
    """(jobs, RunRequest, results folder) of an evaluation: the checkpoint is loaded and every
    mismatch reported now, before any job (harness/convert/evaluate.py)."""
    from harness.convert.evaluate import checkpoint_jobs
    from harness.jobs import default_profile

    profile = ev.profile or default_profile(ev.dataset)
    jobs, req = checkpoint_jobs(ev, profile, ev.splits, ev.shots)
    # beside, not inside, the runs: results/eval-<protocol>-<dataset>[-<profile>]
    run_dir = Path(ev.out) if ev.out else default_out(req).with_name("eval-" + default_out(req).name)
    return jobs, req, run_dir


def evaluate(ev: EvalRequest, *, progress: bool = True) -> Any:
    """Evaluate a checkpoint under a protocol with no training; its results are written exactly
    as a run's (same jobs, store and tables) into `ev.out`. Returns the RunStore; failed jobs
    as in `run` (`failures(store, jobs)`)."""
    jobs, req, run_dir = evaluation_jobs(ev)
    return run(req, run_dir, jobs=jobs, progress=progress)


# -- params and bench --------------------------------------------------------------------------
def params(methods: str | Sequence[str] = "all", backbone: str = REAL_BACKBONE, pretrained: str | None = None,
           frames: int = 8, classes: int = 400, sets: Sequence[str] = (), flops: bool = False) -> list[dict[str, Any]]:
    """`harness params`: one row per method (trainable / total parameters, options, and GFLOPs
    per view with `flops`); `sets` are `<method>.<option>=value` items."""
    from harness.measure.params import params_rows
    from harness.settings import parse_method_sets

    names = _method_names(methods)
    overrides = parse_method_sets(list(sets), names)
    return params_rows(names, backbone, pretrained, frames, classes, overrides, with_flops=flops)


def bench(methods: str | Sequence[str] = "zeroshot", sets: Sequence[str] = (),
          on_start: Callable[[list[str]], None] | None = None, **settings: Any) -> list[dict[str, Any]]:
    """`harness bench` (throughput, MFU, memory): one row per (method, mode). `sets` are
    `<method>.<option>=value` items, checked against every registered method (one list of items
    serves every pass of a script); `on_start(method names)` is called once every input is
    valid, before the first measurement; `settings` are `harness.measure.bench.run_bench`'s
    keywords (backbone, batch, frames, iters, device, modes, on_row, progress, ...)."""
    from harness.measure.bench import run_bench
    from harness.settings import parse_method_sets
    from methods.registry import list_methods

    names = _method_names(methods)
    overrides: Mapping[str, Mapping[str, Any]] = parse_method_sets(list(sets), list_methods())
    if on_start is not None:
        on_start(names)
    return run_bench(names, overrides=overrides, **settings)
