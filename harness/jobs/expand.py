"""Expand a run request into jobs: one job = (method, protocol, dataset, split, shots, seed,
overrides), each naming exactly the files and class lists it trains and evaluates on.

Data flows one way: protocol YAML (roles) -> dataset definition (role -> upstream file) ->
resolved local file (`harness.data.resolver.FileResolver`: verified sha256, or the embedded
dataset's recipe) -> `JobSpec` (harness/jobs/spec.py). Each method's configuration is built once
here (recipe < profile < `--set`) and carried in its jobs; the checks before any compute
(harness/validate.py) and the engine read it from the job.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from harness.data.annotations import read_class_csv
from harness.data.datasets import DatasetSpec, get_dataset
from harness.data.kshot import sampled_list
from harness.data.resolver import FileResolver
from harness.errors import HarnessError
from harness.jobs.descriptions import (
    class_descriptions_ref,
    description_needs,
    descriptions_ref,
    record_description_files,
    record_rephrased_files,
)
from harness.jobs.identity import short_hash
from harness.jobs.spec import JobSpec, ListSpec
from harness.recipes import job_recipe
from harness.settings import DataOptions, Schedule, build_dataclass
from harness.weights_identity import weights_identity
from methods.base import MethodConfig
from methods.registry import make_config
from protocols import check_dataset, get_profile, load_protocol, test_views


@dataclass
class RunRequest:
    methods: list[str]
    protocol: str
    dataset: str
    backbone: str
    pretrained: str | None
    splits: list[int] | None
    seed: int
    method_options: dict[str, dict[str, Any]]
    schedule_overrides: dict[str, Any]
    data_overrides: dict[str, Any]
    profile: str | None
    schedule_kind: str = "shared"
    data_root: str | None = None
    splits_root: str | None = None
    cache_dir: str | None = None
    frames: int | None = None
    shots: list[int] | None = None
    checkpoint: str | None = None  # `harness eval`: the checkpoint evaluated (no training)


@dataclass
class MethodSettings:
    """What every job of one method shares in a run: its configuration (built once), schedule,
    and the record of the published recipe applied (harness.recipes)."""

    config: MethodConfig
    schedule: Schedule
    recipe: dict[str, Any]


def default_profile(dataset: str) -> str | None:
    return "embedded" if get_dataset(dataset).generated else None


def expand_jobs(req: RunRequest) -> list[JobSpec]:
    """All jobs of a run, in a deterministic order (method-major), validated up front so that a
    bad option or a missing file fails before any training starts (every method's option
    problems together, one line each). Each job's id depends only on that job, never on the
    other jobs of the invocation or their order."""
    protocol = load_protocol(req.protocol)
    check_dataset(protocol, req.dataset)
    profile = get_profile(req.profile) if req.profile else None
    resolver = FileResolver(req.dataset, req.data_root, req.splits_root, req.cache_dir,
                            (profile or {}).get("dataset_recipe"))
    splits = select_splits(protocol, resolver.spec, req.splits, profile)
    shots_list = select_shots(protocol, resolver.spec, req.shots, profile)
    data = build_dataclass(DataOptions, dict(req.data_overrides), "data")
    weights = weights_identity(req.backbone, req.pretrained, req.cache_dir)
    phash = protocol_hash(protocol, req.profile, protocol_files(protocol, resolver, req))
    settings = _every_method_settings(req, protocol, profile)
    jobs: list[JobSpec] = []
    for method in req.methods:
        for split in splits:
            for shots in shots_list:
                jobs.append(_make_job(req, protocol, resolver.fork(), method, settings[method], data, split, shots,
                                      weights, phash))
    return jobs


def defined_splits(protocol: dict[str, Any], spec: DatasetSpec) -> list[int]:
    """The splits a protocol defines on a dataset (zero_shot / few_shot / fully_supervised: 1)."""
    return [s for s in protocol["splits"] if s in spec.split_ids]


def select_splits(protocol: dict[str, Any], spec: DatasetSpec, requested: list[int] | None,
                  profile: dict[str, Any] | None) -> list[int]:
    """Explicit `--splits` must all be defined (never silently rewritten); a profile's default
    is intersected with what the protocol defines on this dataset."""
    defined = defined_splits(protocol, spec)
    if requested:
        bad = [s for s in requested if s not in defined]
        if bad:
            raise HarnessError(f"--splits: {bad} not defined by protocol {protocol['name']!r} on {spec.name!r} "
                               f"(it defines splits {defined})")
        return list(requested)
    wanted = (profile or {}).get("splits")
    return ([s for s in wanted if s in defined] or defined) if wanted else defined


def select_shots(protocol: dict[str, Any], spec: DatasetSpec, requested: list[int] | None,
                 profile: dict[str, Any] | None) -> list[int | None]:
    """K values of a few-shot protocol (explicit `--shots` must be defined); [None] elsewhere."""
    if "shots" not in protocol:
        if requested:
            raise HarnessError(f"--shots: protocol {protocol['name']!r} has no shots (only few_shot does)")
        return [None]
    defined = list(protocol["shots"])
    if requested:
        bad = [k for k in requested if k not in defined]
        if bad:
            raise HarnessError(f"--shots: {bad} not defined by protocol {protocol['name']!r} (it defines {defined})")
        return list(requested)
    wanted = (profile or {}).get("shots")
    return ([k for k in wanted if k in defined] or defined) if wanted else defined


def _every_method_settings(req: RunRequest, protocol: dict[str, Any],
                           profile: dict[str, Any] | None) -> dict[str, MethodSettings]:
    """`method_settings` of every method of the run; the problems of all of them together (one
    HarnessError, one line each), so that a bad value of one method does not hide another's."""
    settings: dict[str, MethodSettings] = {}
    problems: list[str] = []
    for method in req.methods:
        try:
            settings[method] = method_settings(req, protocol, profile, method)
        except HarnessError as err:
            problems.extend(line for line in str(err).splitlines() if line not in problems)
    if problems:
        raise HarnessError("\n".join(problems))
    return settings


def method_settings(req: RunRequest, protocol: dict[str, Any], profile: dict[str, Any] | None,
                    method: str) -> MethodSettings:
    """A method's fully resolved options (recipe < profile < --set), built into its configuration
    once, its schedule, and the record of the published recipe applied (harness.recipes)."""
    recipe = job_recipe(method, protocol["name"], req.dataset, req.schedule_kind)
    options = {**recipe.method_options, **(profile or {}).get("method_options", {}).get(method, {}),
               **req.method_options.get(method, {})}
    overrides = dict(req.schedule_overrides)
    if req.frames is not None:
        overrides.setdefault("frames", req.frames)
    schedule = resolve_schedule(protocol, profile, method, recipe.schedule, overrides, req.dataset)
    return MethodSettings(make_config(method, options), schedule, recipe.record)


def resolve_schedule(protocol: dict[str, Any], profile: dict[str, Any] | None, method: str,
                     recipe: dict[str, Any], overrides: dict[str, Any], dataset: str) -> Schedule:
    """protocol schedule < protocol test views for the dataset < the method's recipe schedule
    (non-empty only with --schedule paper; harness.recipes) < profile < --set schedule.*"""
    values: dict[str, Any] = dict(protocol.get("schedule", {}))
    values["views"] = test_views(protocol, dataset)
    values.update(recipe)
    if profile:
        values.update(profile.get("schedule", {}))
    values.update(overrides)
    return build_dataclass(Schedule, values, "schedule")


def _make_job(req: RunRequest, protocol: dict[str, Any], resolver: FileResolver, method: str,
              settings: MethodSettings, data: DataOptions, split: int, shots: int | None,
              weights: dict[str, Any], phash: str) -> JobSpec:
    """One job; `resolver` is this job's own (forked) file record. The job's schedule and data
    options are its own copies, as its records are."""
    needs, source, per_class = description_needs(method, settings.config, data)
    scored = source if "scored_descriptions" in needs else None
    train, evals, eval_refs = _protocol_lists(protocol, resolver, req, split, shots, settings.schedule.views, scored)
    descriptions = descriptions_ref(resolver, protocol, source, train)
    if descriptions is not None and scored:
        descriptions["evals"] = eval_refs
    record_description_files(resolver, descriptions, per_class)
    record_rephrased_files(resolver, method, settings.config, [train, *evals], req.cache_dir, req.splits_root)
    return JobSpec(
        method=method, method_options=settings.config, protocol=protocol["name"],
        protocol_version=int(protocol["version"]), protocol_hash=phash, dataset=req.dataset,
        split=split, shots=shots, seed=req.seed, profile=req.profile,
        schedule=copy.deepcopy(settings.schedule), data=copy.deepcopy(data),
        backbone=req.backbone, pretrained=req.pretrained, train=train, evals=evals,
        select_on=protocol.get("select_on"), closed_set=bool(protocol["closed_set"]),
        summary=protocol["summary"], descriptions=descriptions,
        file_provenance=dict(resolver.provenance),
        splits_root=req.splits_root, cache_dir=req.cache_dir, recipe=settings.recipe, weights=weights,
    )


def protocol_files(protocol: dict[str, Any], resolver: FileResolver, req: RunRequest) -> dict[str, Any]:
    """The fingerprint of every file the protocol defines on the dataset: every split (and K),
    train and evaluation lists with their class files, and the zero-shot targets. Datasets
    without few-shot lists count the training list the K shots are sampled from."""
    record = resolver.fork()
    train_cfg = protocol["train"]
    shots_list = [k for k in protocol.get("shots", [None]) if k is None or k in record.spec.shots]
    for split in defined_splits(protocol, record.spec):
        for shots in shots_list:
            fmt: dict[str, Any] = {"split": split} if shots is None else {"split": split, "shots": shots}
            if train_cfg["ann"] == "fewshot_train" and not record.has("fewshot_train"):
                record.list_and_classes("train", "classes")
            else:
                record.list_and_classes(train_cfg["ann"], train_cfg["classes"], **fmt)
            for ev in protocol.get("evaluate", []):
                ev = _with_fallback(record, ev)
                record.list_and_classes(ev["ann"], ev["classes"], **fmt)
    files = dict(record.provenance)
    if "targets" in protocol:
        _zero_shot_targets(protocol, req, [1, 1], record=files)
    return files


def protocol_hash(protocol: dict[str, Any], profile: str | None, files: dict[str, Any]) -> str:
    """canonical JSON of the definition (incl. its version) + profile + sha256 (or embedded
    recipe) of every file the protocol defines on the dataset (`protocol_files`)."""
    return short_hash({"protocol": protocol, "profile": profile, "files": files}, 12)


def _with_fallback(resolver: FileResolver, ev: dict[str, Any]) -> dict[str, Any]:
    if not resolver.has(ev["ann"]) and ev.get("fallback"):
        return {**ev, "ann": ev["fallback"]}
    return ev


def _list_spec(resolver: FileResolver, name: str, ann_role: str, classes_role: str, views: list[int],
               **fmt: Any) -> ListSpec:
    ann, cls_path = resolver.list_and_classes(ann_role, classes_role, **fmt)
    return ListSpec(name=name, dataset=resolver.spec.name, ann_file=str(ann), class_file=str(cls_path),
                    classnames=read_class_csv(cls_path), video_root=str(resolver.video_dir),
                    modality=resolver.spec.modality, views=list(views))


def _protocol_lists(protocol: dict[str, Any], resolver: FileResolver, req: RunRequest, split: int,
                    shots: int | None, views: list[int], describe: str | None = None
                    ) -> tuple[ListSpec | None, list[ListSpec], dict[str, dict[str, Any]]]:
    """The training list, the evaluation lists and, with `describe` (a description source), where
    each evaluation list's class descriptions are (`class_descriptions_ref`, by list name)."""
    refs: dict[str, dict[str, Any]] = {}
    fmt: dict[str, Any] = {"split": split}
    if shots is not None:
        fmt["shots"] = shots
    train_cfg = protocol["train"]
    if train_cfg["ann"] == "fewshot_train" and not resolver.has("fewshot_train"):
        train = _sampled_few_shot(resolver, shots, req.seed, req.cache_dir)
    else:
        train = _list_spec(resolver, "train", train_cfg["ann"], train_cfg["classes"], [1, 1], **fmt)
    evals: list[ListSpec] = []
    for ev in protocol.get("evaluate", []):
        ev = _with_fallback(resolver, ev)
        added = [_list_spec(resolver, ev["name"], ev["ann"], ev["classes"], views, **fmt)]
        if protocol.get("single_view_too") and list(views) != [1, 1]:  # the 1x1 number beside multi-view
            added.append(_list_spec(resolver, f"{ev['name']}@1x1", ev["ann"], ev["classes"], [1, 1], **fmt))
        evals.extend(added)
        if describe:
            refs.update({lst.name: class_descriptions_ref(resolver, describe, ev["classes"], lst.classnames)
                         for lst in added})
    if "targets" in protocol:
        evals.extend(_zero_shot_targets(protocol, req, views, record=resolver.provenance, describe=describe,
                                        refs=refs))
    return train, evals, refs


def _sampled_few_shot(resolver: FileResolver, shots: int | None, seed: int, cache_dir: str | None) -> ListSpec:
    """Datasets without upstream few-shot lists: K shots per class from the full training list,
    sampled with the run's seed, written once to the cache and fingerprinted like any other file
    (harness/data/kshot.py)."""
    if shots is None or not resolver.has("train"):
        raise HarnessError(f"few_shot on {resolver.spec.name!r}: no upstream few-shot lists and no training list to sample")
    source = resolver.path("train")
    classes_path = resolver.path("classes")
    names = read_class_csv(classes_path)
    out, fingerprint = sampled_list(source, len(names), resolver.spec.name, shots, seed, cache_dir)
    resolver.provenance[f"sampled:{out.name}"] = fingerprint
    return ListSpec(name="train", dataset=resolver.spec.name, ann_file=str(out), class_file=str(classes_path),
                    classnames=names, video_root=str(resolver.video_dir), modality=resolver.spec.modality)


def _dataset_recipe(req: RunRequest) -> str | None:
    """The embedded dataset recipe the request's profile names (None: the default)."""
    return get_profile(req.profile).get("dataset_recipe") if req.profile else None


def _zero_shot_targets(protocol: dict[str, Any], req: RunRequest, views: list[int],
                       record: dict[str, Any] | None = None, describe: str | None = None,
                       refs: dict[str, dict[str, Any]] | None = None) -> list[ListSpec]:
    """The target datasets' evaluation lists; their files' fingerprints go into `record` (keyed
    `<target>:<file>`), so a changed target list changes the job's id and the protocol hash. With
    `describe` (a description source), where each list's class descriptions are goes into `refs`."""
    spec = protocol["evaluate_target"]
    out = []
    for target in protocol["targets"].get(req.dataset, []):
        resolver = FileResolver(target, req.data_root, req.splits_root, req.cache_dir, _dataset_recipe(req))
        for split in spec["eval_splits"]:
            classes_role = spec["classes"] if resolver.has(spec["classes"]) else "classes"
            out.append(_list_spec(resolver, f"{target}/split{split}", spec["ann"], classes_role, views, split=split))
            if describe and refs is not None:
                refs[out[-1].name] = class_descriptions_ref(resolver, describe, classes_role, out[-1].classnames,
                                                            split=split)
        if record is not None:
            record.update({f"{target}:{rel}": fp for rel, fp in resolver.provenance.items()})
    return out
