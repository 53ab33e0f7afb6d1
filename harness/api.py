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
import itertools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.convert.evaluate import checkpoint_jobs, model_source
from harness.data.datasets import get_dataset
from harness.defaults import DEFAULT_SEED, EMBEDDED_BACKBONE, REAL_BACKBONE, SYNTHETIC_BACKBONES
from harness.distributed import rank0 as is_rank0
from harness.errors import ConfigurationError, HarnessError
from harness.jobs.expand import RunRequest, default_profile, expand_jobs
from harness.locks import claim_jobs, folder_lock
from harness.measure.bench import run_bench
from harness.measure.params import params_rows
from harness.provenance import provenance
from harness.report import write_summary
from harness.settings import Overrides, parse_method_sets, parse_set_args, parse_setting
from harness.store import RunStore, default_run_dir
from harness.validate import (
    DataCheck,
    Problems,
    check_frames,
    check_jobs,
    check_positive,
    check_results_dir,
    check_shard,
    record_bad_data,
    request_problems,
)
from methods.registry import list_methods, make_config, parse_method_list


def _method_names(methods: str | Sequence[str]) -> list[str]:
    """'msta,aim' / 'all' / a list -> validated names in the order given, a repeated name kept
    (the plan reports it: dropping it silently would run fewer jobs than asked for); unknown
    names raise with suggestions."""
    text = methods if isinstance(methods, str) else ",".join(methods)
    parse_method_list(text)  # every name known, at least one
    return list_methods() if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]


# -- run ---------------------------------------------------------------------------------------
def request(methods: str | Sequence[str], protocol: str, *, dataset: str = "embedded", backbone: str | None = None,
            pretrained: str | None = None, sets: Sequence[str] = (), profile: str | None = None,
            seed: int = DEFAULT_SEED, **fields: Any) -> Any:
    """A `RunRequest` with `harness run`'s defaults: the embedded dataset runs the project's
    pretrained tiny CLIP (`synthetic`) under the `embedded` profile, real datasets ViT-B/16.
    `pretrained="random"` asks for random weights; leaving it out where no default exists (a real
    dataset's ViT-B/16) is refused, since a randomly initialised model is never what one means by
    a benchmark row. `sets` are `--set` items; `fields` are the other RunRequest fields (splits,
    shots, frames, schedule_kind, data_root, splits_root, cache_dir).

    Problems that leave nothing to plan (an unknown method or dataset, a `--set` item that does
    not parse, no weights) raise `InvalidInvocation` here, together with the request's other
    problems; the rest (a value out of range, a bad file, bad data) are `plan`'s."""
    problems = Problems()
    names = problems.attempt(lambda: _method_names(methods)) or []
    # each item parsed once, on its own: every typo is listed
    parsed = [problems.attempt(lambda item=item: parse_setting(item, names)) for item in sets]
    spec = problems.attempt(lambda: get_dataset(dataset))
    backbone = backbone or (EMBEDDED_BACKBONE if spec is None or spec.generated else REAL_BACKBONE)
    if pretrained is None and backbone in SYNTHETIC_BACKBONES:
        pretrained = "synthetic"
    elif pretrained is None:
        problems.lines.append(f"--pretrained not given: {backbone} would train from random weights on {dataset}; "
                              "pass --pretrained openai (or a checkpoint file), or --pretrained random to train "
                              "from scratch on purpose")
    if pretrained == "random":
        pretrained = None
    if problems.lines:  # nothing to plan: list the request's other problems with these
        given = methods.split(",") if isinstance(methods, str) else list(methods)
        partial = RunRequest(methods=[n.strip() for n in given if n.strip()], protocol=protocol, dataset=dataset,
                             backbone=backbone, pretrained=pretrained, seed=seed, method_options={},
                             schedule_overrides={}, data_overrides={}, profile=profile,
                             **{"splits": None, **fields})
        problems.lines.extend(request_problems(partial))
        problems.raise_if_any()
    method_opts, schedule, data = Overrides.of(parsed).as_tuple()
    return RunRequest(methods=names, protocol=protocol, dataset=dataset, backbone=backbone, pretrained=pretrained,
                      splits=fields.pop("splits", None), seed=seed, method_options=method_opts,
                      schedule_overrides=schedule, data_overrides=data,
                      profile=profile or default_profile(dataset), **fields)


def sweep_grid(sweeps: Sequence[str]) -> list[list[str]]:
    """`["a.b=1,2", "c.d=x,y"]` (`--sweep` items) -> [["a.b=1","c.d=x"], ["a.b=1","c.d=y"], ...]:
    the grid's points as `--set` items."""
    axes = []
    for item in sweeps:
        if "=" not in item:
            raise HarnessError(f"--sweep {item!r}: expected KEY=V1,V2,... e.g. msta.rank=64,128,256")
        key, values = item.split("=", 1)
        if values.startswith("[") or not values:
            raise HarnessError(f"--sweep {item!r}: give comma-separated scalar values")
        axes.append([f"{key}={v.strip()}" for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def sweep_points(sweeps: Sequence[str], methods: Sequence[str]) -> list[list[Any]]:
    """The grid of `sweep_grid` as parsed settings (`harness.settings.Setting`): each value of
    each axis parsed once, however many points it is part of; every bad value is listed (one
    HarnessError, one line each)."""
    grid = sweep_grid(sweeps)
    problems = Problems()
    parsed = {item: problems.attempt(lambda item=item: parse_setting(item, list(methods)))
              for item in dict.fromkeys(item for point in grid for item in point)}
    if problems.lines:
        raise HarnessError("\n".join(dict.fromkeys(problems.lines)))
    return [[parsed[item] for item in point] for point in grid]


def sweep_jobs(req: Any, set_lists: Sequence[Sequence[str]]) -> list:
    """Every job of `req` once per list of `--set` items (a `--sweep` grid: each list is the
    run's own items plus one grid point), in order."""
    jobs: list = []
    for items in set_lists:
        m_opts, sched, dat = parse_set_args(list(items), req.methods)
        jobs.extend(expand_jobs(dataclasses.replace(req, method_options=m_opts, schedule_overrides=sched,
                                                    data_overrides=dat)))
    return jobs


def _with_point(req: Any, point: Sequence[Any]) -> Any:
    """`req` with one sweep point's settings (parsed: `sweep_points`) applied over its own overrides."""
    m_opts, sched, dat = Overrides.of(point).as_tuple()
    options = {m: {**req.method_options.get(m, {}), **m_opts.get(m, {})} for m in {*req.method_options, *m_opts}}
    return dataclasses.replace(req, method_options=options, schedule_overrides={**req.schedule_overrides, **sched},
                               data_overrides={**req.data_overrides, **dat})


def default_out(req: Any) -> Path:
    """results/<protocol>-<dataset>[-<profile>]"""
    return default_run_dir(Path("results"), req.protocol, req.dataset, req.profile)


@dataclasses.dataclass
class Plan:
    """A validated invocation: its request, every job it runs (a sweep's points, one shard),
    the results folder, and the jobs whose data is unusable (job id -> one line): those are
    recorded as failed and not started, the others run."""

    request: Any
    jobs: list
    store: Any
    bad_data: dict[str, str]
    shard: tuple[int, int] = (0, 1)
    expanded: int = 0  # jobs of the invocation before sharding

    @property
    def runnable(self) -> list:
        return [job for job in self.jobs if job.job_id not in self.bad_data]

    @property
    def empty_shard(self) -> bool:
        """A `--shard` that selects none of the invocation's jobs (more shards than jobs)."""
        return not self.jobs and self.shard[1] > 1


def plan(req: Any, out: str | Path | Any | None = None, *, jobs: Sequence[Any] | None = None,
         sweeps: Sequence[str] = (), shard: tuple[int, int] = (0, 1), dry_run: bool = False) -> Plan:
    """The one validation step of every front end (`harness run` / `eval`, the order-pair
    benchmark, `run` and `evaluate` below): the request's own problems (a repeated method,
    `--frames`, `--seed`, `--pretrained`, the backbone), every job of every sweep point and of the
    shard (`harness.validate.job_option_problems`: ranges, the method's `max_frames`, class sets
    that must be disjoint), the results folder, all listed together, one line each, in an
    `InvalidInvocation` before anything runs. Then (not for a dry run) each job's data: lists,
    class files, a container-header probe of every listed video, descriptions; a job with bad
    data is in `bad_data` (not an invocation error: the other jobs still run). `jobs` given
    (an evaluation's, a caller's subset) replaces the request's expansion."""
    problems = Problems()
    problems.lines.extend(request_problems(req))
    expand_req = dataclasses.replace(req, methods=list(dict.fromkeys(req.methods)))
    if req.frames is not None and req.frames < 1:  # reported once above, not again per job
        expand_req = dataclasses.replace(expand_req, frames=None)
    if jobs is None:
        jobs = []
        for point in problems.attempt(lambda: sweep_points(sweeps, expand_req.methods)) or []:
            jobs.extend(problems.attempt(lambda point=point: _expand(expand_req, point)) or [])
    jobs = list(jobs)
    expanded = len(jobs)
    if problems.attempt(lambda: check_shard(shard) or True):
        jobs = jobs[shard[0]::shard[1]]
    check_jobs(jobs, problems)
    store = out if isinstance(out, RunStore) else RunStore(Path(out) if out is not None else default_out(req))
    given = out is not None and not isinstance(out, RunStore)
    problems.attempt(lambda: check_results_dir(store.root, "--out" if given else "results folder",
                                               create=not dry_run))
    problems.raise_if_any()
    bad: dict[str, str] = {}
    if not dry_run:
        check = DataCheck(req.cache_dir)
        for job in jobs:
            if not store.is_finished(job) and (problem := check.problem(job)) is not None:
                bad[job.job_id] = problem
    return Plan(expand_req, jobs, store, bad, shard, expanded)


def _expand(req: Any, point: Sequence[Any]) -> list:
    return expand_jobs(_with_point(req, point) if point else req)


def run(req: Any, out: str | Path | Any | None = None, *, jobs: Sequence[Any] | None = None,
        sweeps: Sequence[str] = (), shard: tuple[int, int] = (0, 1), progress: bool = True) -> Any:
    """Plan (`plan`: everything checked first, an `InvalidInvocation` listing every problem) and
    run every unfinished job of `req` (or the given `jobs`: a sweep or a shard of it) into the
    results folder `out` (a path or a RunStore; default `default_out(req)`), rewrite its tables,
    and return its `RunStore`. A failing job, and a job whose data is unusable (not started), is
    recorded in its error.json and the run goes on; `failures(store, jobs)` lists them. A
    `ConfigurationError` (the request cannot run at all) is raised."""
    planned = plan(req, out, jobs=jobs, sweeps=sweeps, shard=shard)
    execute(planned, progress)
    return planned.store


def execute(planned: Plan, progress: bool = True) -> tuple[list, list]:
    """Run a plan: record the jobs with bad data as failed (error.json, one line each on stderr),
    run the others. Returns (jobs not started for bad data, jobs that failed while running)."""
    bad = [job for job in planned.jobs if job.job_id in planned.bad_data]
    for job in bad:
        record_bad_data(planned.store, job, planned.bad_data[job.job_id], write=is_rank0())
    return bad, run_jobs(planned.runnable, planned.store, planned.request, progress)


def run_jobs(jobs: list, store: Any, req: Any, progress: bool = True) -> list:
    """Run every unfinished job (already planned: `plan`); a failing job (a crash, a bad file, a
    non-finite loss) is recorded in its error.json and the run goes on with the next. Returns
    the jobs that failed in this process."""
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


def run_claimed_job(job: Any, store: Any, progress: bool = False) -> bool:
    """Run one job whose lock the caller holds (a launcher's task, harness/launch/task.py; every
    torchrun process of it calls this), record its result or error, rewrite the run's tables
    (rank 0). True if it finished. Preemption (`harness.preemption.Preempted`) passes through."""
    rank0 = is_rank0()
    finished = _run_one_job(job, store, provenance(), job.job_id, rank0, progress)
    if rank0:
        with folder_lock(store.root):
            _write_summary(store)
    return finished


def _run_one_job(job: Any, store: Any, prov: dict[str, Any], tag: str, rank0: bool, progress: bool) -> bool:
    """Run one job and record its result or its error; True if it finished."""
    # The engine (the mm stack) only when a job runs: `harness bench` / params and the bare GPU
    # host of scripts/gpu_bench.sh use this module without mmengine.
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
    profile = ev.profile or default_profile(ev.dataset)
    jobs, req = checkpoint_jobs(ev, profile, ev.splits, ev.shots)
    # beside, not inside, the runs: results/eval-<protocol>-<dataset>[-<profile>]
    run_dir = Path(ev.out) if ev.out else default_out(req).with_name("eval-" + default_out(req).name)
    return jobs, req, run_dir


def evaluation_plan(ev: EvalRequest, *, dry_run: bool = False) -> Plan:
    """The evaluation's jobs planned like a run's (`plan`): the checkpoint loaded and checked,
    every option, the results folder and each job's data."""
    jobs, req, run_dir = evaluation_jobs(ev)
    return plan(req, run_dir if ev.out else RunStore(run_dir), jobs=jobs, dry_run=dry_run)


def evaluate(ev: EvalRequest, *, progress: bool = True) -> Any:
    """Evaluate a checkpoint under a protocol with no training; its results are written exactly
    as a run's (same jobs, store and tables) into `ev.out`. Returns the RunStore; failed jobs
    (and jobs whose data is unusable) as in `run` (`failures(store, jobs)`)."""
    planned = evaluation_plan(ev)
    execute(planned, progress)
    return planned.store


# -- params and bench --------------------------------------------------------------------------
def params(methods: str | Sequence[str] = "all", backbone: str = REAL_BACKBONE, pretrained: str | None = None,
           frames: int = 8, classes: int = 400, sets: Sequence[str] = (), flops: bool = False) -> list[dict[str, Any]]:
    """`harness params`: one row per method (trainable / total parameters, options, and GFLOPs
    per view with `flops`); `sets` are `<method>.<option>=value` items. Every bad input is
    listed before any model is built (`InvalidInvocation`)."""
    problems = Problems()
    names = problems.attempt(lambda: _method_names(methods)) or []
    check_positive(problems, {"--frames": frames, "--classes": classes})
    check_frames(problems, names, frames)
    overrides = problems.attempt(lambda: parse_method_sets(list(sets), names))
    names = list(dict.fromkeys(names))
    configs = _method_configs(problems, names, overrides or {})
    problems.raise_if_any()
    return params_rows(names, backbone, pretrained, frames, classes, configs, with_flops=flops)


def bench(methods: str | Sequence[str] = "zeroshot", sets: Sequence[str] = (),
          on_start: Callable[[list[str]], None] | None = None, **settings: Any) -> list[dict[str, Any]]:
    """`harness bench` (throughput, MFU, memory): one row per (method, mode). `sets` are
    `<method>.<option>=value` items, checked against every registered method (one list of items
    serves every pass of a script); `on_start(method names)` is called once every input is
    valid, before the first measurement; `settings` are `harness.measure.bench.run_bench`'s
    keywords (backbone, batch, frames, iters, device, modes, on_row, progress, ...). Every bad
    input is listed before any model is built (`InvalidInvocation`)."""
    problems = Problems()
    names = problems.attempt(lambda: _method_names(methods)) or []
    check_positive(problems, {"--batch": settings.get("batch"), "--frames": settings.get("frames"),
                              "--iters": settings.get("iters"), "--image-size": settings.get("image_size"),
                              "--num-classes": settings.get("num_classes")})
    check_positive(problems, {"--warmup": settings.get("warmup")}, minimum=0)
    check_frames(problems, names, settings.get("frames"))
    overrides: Mapping[str, Mapping[str, Any]] | None = problems.attempt(
        lambda: parse_method_sets(list(sets), list_methods()))
    names = list(dict.fromkeys(names))
    configs = _method_configs(problems, list(dict.fromkeys([*names, *(overrides or {})])), overrides or {})
    problems.raise_if_any()
    if on_start is not None:
        on_start(names)
    return run_bench(names, overrides={name: configs[name] for name in names if name in configs}, **settings)


def _method_configs(problems: Problems, methods: Sequence[str],
                    overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each method's configuration with its `--set` options, built once (its `validate()` problems
    listed in `problems`) and handed to the models built from it."""
    configs = {}
    for name in methods:
        config = problems.attempt(lambda name=name: make_config(name, overrides.get(name)))
        if config is not None:
            configs[name] = config
    return configs
