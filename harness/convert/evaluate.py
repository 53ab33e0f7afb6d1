"""`harness eval`: evaluate a checkpoint (converted release or a run's) under a protocol, with
no training, writing exactly what a run writes (config.json, metrics.json, predictions/, the
summary tables) through the same store, job runner and report.

Why jobs and not a separate path: an evaluated checkpoint must be comparable with trained
results line by line: the same lists, views, batching and metrics code. The job is the run's
job for the checkpoint's method, options and frames, with the schedule's `epochs` set to 0 and
a `checkpoint` record ({sha256, kind, path}) whose sha256 and kind enter the job's identity, so
another file is another job and the same file elsewhere is the same job.

The engine does not know checkpoints: the API hands each evaluation job a `CheckpointModel`, the
model source that loads the job's checkpoint inside the job (after the job's seed and thread
settings are applied, like a training job's fresh model). The load made while planning (to
report every mismatch before any job) is discarded: no model is kept between jobs or handed
from planning to a job, so an evaluation's numbers do not depend on what ran before it in the
process.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from methods.heads import LinearHeadMixin


def checkpoint_jobs(args: Any, profile: str | None, splits: list[int] | None = None,
                    shots: list[int] | None = None) -> tuple[list, Any]:
    """`args`: a `harness.api.EvalRequest` (or the parsed `harness eval` options). Load the checkpoint (every mismatch is reported here, before any job), then the run's
    jobs for its method, options, frames and backbone, marked with the checkpoint."""
    from harness.convert.checkpoint import load_checkpoint
    from harness.defaults import DEFAULT_SEED
    from harness.jobs.expand import RunRequest, expand_jobs
    from harness.settings import parse_set_args

    with torch.random.fork_rng(devices=[]):  # building seeds the global RNG: planning leaves it as it was
        loaded = load_checkpoint(args.checkpoint, method=args.method, base=args.pretrained, cache_dir=args.cache)
    recipe = loaded.recipe
    method = recipe["method"]
    if args.backbone and args.backbone != recipe["backbone"]:
        raise HarnessError(f"--backbone {args.backbone}: {args.checkpoint} is a checkpoint of backbone "
                           f"{recipe['backbone']!r}")
    options, schedule, data = parse_set_args(args.sets, [method])
    if options:
        raise HarnessError(f"--set {method}.<option>: a checkpoint's method options are fixed ({args.checkpoint} "
                           "records them); only schedule.* and data.* apply to an evaluation")
    for key, value in (("frames", recipe["frames"]), ("epochs", 0)):
        if key in schedule and schedule[key] != value:
            raise HarnessError(f"--set schedule.{key}={schedule[key]}: evaluating {args.checkpoint} uses "
                               f"schedule.{key}={value} (the checkpoint's model)")
    schedule.update(frames=recipe["frames"], epochs=0, warmup_epochs=0, select="last")
    seed = args.seed if args.seed is not None else (recipe["seed"] if loaded.kind == "run" else DEFAULT_SEED)
    # A run's checkpoint is evaluated on the run's copy of its data (its cache) unless --cache says
    # otherwise: a generated dataset is rebuilt per cache, and the copies need not be bit-identical.
    cache = args.cache or (recipe.get("cache_dir") if loaded.kind == "run" else None)
    req = RunRequest(methods=[method], protocol=args.protocol, dataset=args.dataset, backbone=recipe["backbone"],
                     pretrained=recipe["pretrained"], splits=splits,
                     seed=seed, method_options={method: dict(recipe["method_options"])}, schedule_overrides=schedule,
                     data_overrides=data, profile=profile, data_root=args.data_root, splits_root=args.splits_root,
                     cache_dir=cache, shots=shots,
                     checkpoint=str(Path(args.checkpoint).resolve()))
    record = {"sha256": loaded.sha256, "kind": loaded.kind, "path": req.checkpoint}
    jobs = [dataclasses.replace(job, checkpoint=dict(record)) for job in expand_jobs(req)]
    _check_fits(loaded.net, jobs, args.checkpoint)
    return jobs, req


def _check_fits(net: Any, jobs: list, checkpoint: str) -> None:
    """Refuse now, not inside every job: a model the protocol cannot use (a closed-set head under
    an open-set protocol), and a linear head, which scores exactly its training classes in
    their order, on an evaluation list with other classes (naming the list)."""
    for job in jobs[:1]:
        try:
            net.check_protocol(job.protocol, job.closed_set)
        except HarnessError as err:
            raise HarnessError(f"{checkpoint}: {err}") from None
    if not isinstance(net, LinearHeadMixin) or net.cls_head is None:
        return
    for lst in (lst for job in jobs for lst in job.evals):
        try:
            net.check_classnames(lst.classnames)
        except HarnessError as err:
            raise HarnessError(f"{checkpoint} on {lst.class_file} ({lst.name}): {err}") from None


class CheckpointModel:
    """The model source (`harness.engine.runner.ModelSource`) of an evaluation job: its checkpoint,
    loaded when the job builds its model; the file must still be the one the job was made for.
    The runner checks the model against the job's protocol as for any job."""

    def build(self, job: Any) -> tuple[Any, Any]:
        from harness.backbone import BackboneSpec
        from harness.convert.checkpoint import load_checkpoint

        record = job.checkpoint
        if not record:
            raise HarnessError(f"job {job.job_id} evaluates no checkpoint; it needs no CheckpointModel")
        loaded = load_checkpoint(record["path"], method=job.method, base=job.pretrained, cache_dir=job.cache_dir)
        if loaded.sha256 != record["sha256"]:
            raise HarnessError(f"{record['path']}: changed since the evaluation started (sha256 {loaded.sha256[:12]}, "
                               f"expected {record['sha256'][:12]})")
        return loaded.net, BackboneSpec(**loaded.backbone)


def model_source(job: Any) -> CheckpointModel | None:
    """The model source a job runs with: `CheckpointModel` for an evaluation job, else None (the
    engine's fresh model)."""
    return CheckpointModel() if job.checkpoint else None
