"""A suite as ordinary runs: one request per (method, dataset) with the suite's protocol, recipe,
frames, views, splits / shots, backbone and weights; the jobs they expand to (identity as any
`harness run`: a finished job is skipped by every command that reaches it); what is missing
before they can run (split files, weights, videos); and what they will cost.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.defaults import DEFAULT_SEED
from harness.errors import HarnessError
from harness.reproduce.suite import Suite

NO_DATA_ROOT = "<no --data-root>"


@dataclass
class Group:
    """The jobs of one (method, dataset) of a suite, run into the dataset's results folder."""

    method: str
    dataset: str
    request: Any
    out: Path
    jobs: list = field(default_factory=list)
    problem: str | None = None  # why it has no jobs (a list that cannot be had, an unknown backbone, ...)


@dataclass
class SuitePlan:
    suite: Suite
    out: Path
    groups: list[Group]
    missing: list[str]  # one line per missing thing (split files, weights, videos)
    notes: list[str]

    @property
    def jobs(self) -> list:
        return [job for g in self.groups for job in g.jobs]


def default_out(suite: Suite) -> Path:
    return Path("results") / f"reproduce-{suite.name}"


def plan_suite(suite: Suite, *, out: Path | None = None, data_root: str | None = None, splits_root: str | None = None,
               cache: str | None = None, pretrained: str | None = None, dry_run: bool = False) -> SuitePlan:
    """Every job of the suite, and what it lacks. A dry run without a data root still lists the
    jobs (every video then counts as missing); a real run needs one."""
    from harness import api
    from harness.data.datasets import DATA_ROOT_ENV

    out = Path(out) if out is not None else default_out(suite)
    missing: list[str] = []
    notes: list[str] = []
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if root is None and dry_run:
        root = NO_DATA_ROOT
        notes.append("no --data-root (or HARNESS_DATA_ROOT): every listed video counts as missing")
    weights = _weights(suite, pretrained, missing, notes)
    groups = []
    for dataset in suite.datasets:
        for method in suite.methods:
            views = suite.views_for(method, dataset)
            sets = list(suite.sets) + ([f"schedule.views=[{views[0]},{views[1]}]"] if views else [])
            group = Group(method, dataset, None, out / f"{suite.protocol}-{dataset}")
            try:
                group.request = api.request(
                    method, suite.protocol, dataset=dataset, backbone=suite.backbone,
                    pretrained=weights if weights is not None else "random", sets=sets, profile=suite.profile,
                    seed=suite.seed if suite.seed is not None else DEFAULT_SEED, splits=suite.splits,
                    shots=suite.shots, frames=suite.frames_for(method, dataset), schedule_kind=suite.schedule,
                    data_root=root, splits_root=splits_root, cache_dir=cache)
                _check_backbone(suite)
                group.jobs = _expand(group.request)
            except HarnessError as err:
                group.problem = str(err).splitlines()[0]
            groups.append(group)
    hints: dict[str, None] = {}
    for problem in dict.fromkeys(g.problem for g in groups if g.problem):
        text, hint = _split_hint(problem)
        if hint:
            hints[hint] = None
        datasets = ", ".join(sorted({g.dataset for g in groups if g.problem == problem}))
        missing.append(f"split files / lists ({datasets}): {text}" if "download" in text or "does not exist" in text
                       else f"cannot plan {datasets}: {text}")
    missing.extend(f"  {hint}" for hint in hints)
    missing.extend(_missing_videos([job for g in groups for job in g.jobs]))
    return SuitePlan(suite, out, groups, missing, notes)


def _split_hint(problem: str) -> tuple[str, str | None]:
    """A problem line without the offline hint that every unreachable file repeats."""
    marker = " To work offline"
    if marker in problem:
        text, hint = problem.split(marker, 1)
        return text.rstrip(". ") + ")" if text.count("(") > text.count(")") else text.rstrip(), "To work offline" + hint
    return problem, None


def _expand(request: Any) -> list:
    from harness.jobs.expand import expand_jobs

    return expand_jobs(request)


def _check_backbone(suite: Suite) -> None:
    from harness.validate import check_backbone_name

    check_backbone_name(suite.backbone, None if suite.needs_weights_file else str(suite.pretrained))


def _weights(suite: Suite, given: str | None, missing: list[str], notes: list[str]) -> str | None:
    """The weights the runs start from: the suite's tag, or the file the user passes
    (`--pretrained`) where the suite needs one; None when that file is missing."""
    if given is not None:
        if not Path(given).expanduser().is_file() and suite.needs_weights_file:
            missing.append(f"weights: --pretrained {given}: no such file ({suite.pretrained['file']})")
            return None
        return given
    if suite.needs_weights_file:
        missing.append(f"weights: pass --pretrained FILE: {suite.pretrained['file']}")
        notes.append("jobs listed with random weights in place of the missing weights file (their ids change "
                     "with the file)")
        return None
    tag = str(suite.pretrained)
    if tag in ("synthetic", "random"):
        return tag
    problem = _tag_not_cached(suite.backbone, tag)
    if problem:
        missing.append(f"weights: {problem}")
    return tag


def _tag_not_cached(backbone: str, tag: str) -> str | None:
    """Why open_clip's `tag` weights of `backbone` are not on this machine (None when they are)."""
    try:
        import open_clip

        from harness.backbone import resolve_model_name
        from harness.weights_identity import _cached_download

        resolved, _ = resolve_model_name(backbone, tag)
        cfg = open_clip.get_pretrained_cfg(resolved, tag) or {}
        if _cached_download(cfg) is not None:
            return None
    except Exception:  # noqa: BLE001 - a name open_clip does not know is reported by the plan
        pass
    return (f"{backbone} '{tag}' is not in the local cache: downloaded on first use (offline: download it "
            "elsewhere and pass --pretrained FILE)")


def _missing_videos(jobs: list) -> list[str]:
    """Per dataset: how many listed videos (training and evaluation lists of the jobs) are not
    on disk, with an example path."""
    from harness.data.annotations import read_annotation_list

    seen: dict[tuple[str, str], None] = {}
    for job in jobs:
        for lst in ([job.train] if job.train else []) + list(job.evals):
            seen[(lst.ann_file, lst.video_root, lst.dataset, len(lst.classnames), lst.modality)] = None
    by_dataset: dict[str, list[int]] = {}
    example: dict[str, str] = {}
    roots: dict[str, str] = {}
    videos_seen: dict[str, set[str]] = {}
    for ann, root, dataset, classes, modality in seen:
        try:
            entries = read_annotation_list(ann, classes, modality)
        except HarnessError as err:
            by_dataset.setdefault(dataset, [0, 0])
            example.setdefault(dataset, f"unreadable list {ann}: {err}")
            continue
        counts = by_dataset.setdefault(dataset, [0, 0])
        names = videos_seen.setdefault(dataset, set())
        roots[dataset] = root
        for entry in entries:
            if entry.path in names:
                continue
            names.add(entry.path)
            counts[1] += 1
            if root.startswith(NO_DATA_ROOT) or not os.path.exists(os.path.join(root, entry.path)):
                counts[0] += 1
                example.setdefault(dataset, entry.path)
    out = []
    for dataset, (absent, total) in by_dataset.items():
        if absent:
            where = roots.get(dataset, "?")
            where = f"<data-root>/{where.split(NO_DATA_ROOT, 1)[1].lstrip('/')}" if NO_DATA_ROOT in where else where
            out.append(f"videos: {dataset}: {absent:,} of {total:,} listed videos not found under {where} "
                       f"(e.g. {example.get(dataset)})")
    return out


def list_lengths(job: Any) -> tuple[int, list[tuple[int, int, int]]]:
    """(training clips, [(videos, views, classes) per evaluation list]) of a job, from its lists."""
    def count(path: str) -> int:
        with open(path) as handle:
            return sum(1 for line in handle if line.strip())

    train = count(job.train.ann_file) if job.train else 0
    evals = [(count(e.ann_file), int(e.views[0]) * int(e.views[1]), len(e.classnames)) for e in job.evals]
    return train, evals


def estimate(plan: SuitePlan, throughput: Any, cache: str | None = None) -> list[dict[str, Any]]:
    """One row per job: its settings, list sizes, FLOPs and GPU-hours (harness/measure/cost.py)."""
    from harness.measure.cost import CostModel, gpu_hours, job_flops
    from harness.paths import cache_root

    model = CostModel(cache_root(cache) / "flops-cost.json")
    rows = []
    for group in plan.groups:
        for job in group.jobs:
            train, evals = list_lengths(job)
            options = {k: v for k, v in job.method_options.to_dict().items() if k not in ("lr", "weight_decay")}
            try:
                cost = model.step_cost(job.method, options, job.backbone, job.schedule.frames)
            except Exception as err:  # noqa: BLE001 - an estimate must never stop the plan
                rows.append({"dataset": job.dataset, "method": job.method, "split": job.split, "shots": job.shots,
                             "frames": job.schedule.frames, "views": "?", "epochs": job.schedule.epochs,
                             "train_clips": 0, "eval_videos": 0, "train_pflops": 0.0, "eval_pflops": 0.0,
                             "gpu_hours": float("nan"), "measured_rate": False, "job_id": job.job_id,
                             "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})
                continue
            trained = job.train is not None and job.schedule.epochs > 0 and (
                cost.per_clip > 0 or cost.per_class_step > 0)
            flops = job_flops(cost, train_clips=train if trained else 0,
                              classes=len(job.train.classnames) if job.train else 0,
                              epochs=job.schedule.epochs, batch_size=job.schedule.batch_size,
                              evals=evals)
            hours, measured = gpu_hours(flops, job.method, throughput)
            views = job.evals[0].views if job.evals else [1, 1]
            rows.append({"dataset": job.dataset, "method": job.method, "split": job.split, "shots": job.shots,
                         "frames": job.schedule.frames, "views": f"{views[0]}x{views[1]}",
                         "epochs": job.schedule.epochs, "train_clips": train if trained else 0,
                         "eval_videos": sum(v for v, _, _ in evals), "train_pflops": flops["train"] / 1e15,
                         "eval_pflops": flops["eval"] / 1e15, "gpu_hours": hours, "measured_rate": measured,
                         "job_id": job.job_id})
    return rows
