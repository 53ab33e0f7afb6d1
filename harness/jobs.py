"""Expand `harness run` into jobs: one job = (method, protocol, dataset, split, shots, seed,
overrides), each naming exactly the files and class lists it trains and evaluates on.

Data flows one way: protocol YAML (roles) -> dataset definition (role -> upstream file) ->
resolved local file (verified sha256, or the embedded dataset's recipe) -> JobSpec. The JobSpec
is plain data: it is hashed into the job id, written next to the result, and is all the engine
needs.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: Schedule keys that change how a job runs, not what it computes: recorded in the job's config,
#: never hashed into its id (another machine, more memory or more workers -> the same job).
#: Extend here when adding such a key. `micro_batch` (and the number of processes, which is not
#: a key at all) qualify because the optimiser update over the global batch is the unit of
#: training (harness.engine.batches / update): tests/test_training_arithmetic.py trains 102 clips
#: at batch 32 with micro-batch 32 / 16 / 8 and on 1 vs 2 processes and gets the same updates, the
#: same lr at each and the same float64 weights (1e-8 relative).
EXECUTION_ONLY_KEYS: tuple[str, ...] = ("num_workers", "cpu_threads", "micro_batch", "grad_checkpointing",
                                        "log_backend")
#: The same for `data.*` keys (decoder threads change CPU time, never the decoded frames).
EXECUTION_ONLY_DATA_KEYS: tuple[str, ...] = ("decode_threads",)
#: Schedule keys added after results existed: left out of a job's identity while at this default
#: value, so the ids of jobs that never used them stay what they were.
IDENTITY_DEFAULTS: dict[str, object] = {"token_mask": 0.0}

#: Version of the layout of a job's config/metrics records and of its identity. Bump it when
#: either changes meaning: folders written by an older format are rerun, not reused (and stay
#: readable by `harness report`, in rows of their own). 3: the optimiser update over the global
#: batch is the unit of training (per-update lr, short last batch as its own update, per-sample
#: randomness), so results of format 2 with the same settings were computed differently.
RESULTS_FORMAT = 3


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@dataclass
class ListSpec:
    """An annotation list with the class list its labels index."""

    name: str
    dataset: str
    ann_file: str
    class_file: str
    classnames: list[str]
    video_root: str
    modality: str = "video"
    views: list[int] = field(default_factory=lambda: [1, 1])


@dataclass
class JobSpec:
    method: str
    method_options: dict[str, Any]
    protocol: str
    protocol_version: int
    protocol_hash: str
    dataset: str
    split: int
    shots: int | None
    seed: int
    profile: str | None
    schedule: dict[str, Any]
    data: dict[str, Any]
    backbone: str
    pretrained: str | None
    train: ListSpec | None
    evals: list[ListSpec]
    select_on: str | None
    closed_set: bool
    summary: str
    descriptions: dict[str, Any] | None = None
    file_provenance: dict[str, Any] = field(default_factory=dict)
    splits_root: str | None = None
    cache_dir: str | None = None
    #: The method's published recipe as this job applies it (harness.recipes): scope, source,
    #: what it set, and the ingredients the engine does not implement (`not_applied`).
    recipe: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    #: `harness eval`: the checkpoint evaluated instead of training ({sha256, kind, path}).
    checkpoint: dict[str, Any] = field(default_factory=dict)
    results_format: int = RESULTS_FORMAT

    #: Machine-specific locations: recorded, but not part of the job's identity (the files'
    #: checksums in `file_provenance` are).
    LOCAL_KEYS = ("ann_file", "class_file", "video_root", "splits_root", "cache_dir", "root")

    @property
    def job_id(self) -> str:
        parts = [self.method, f"s{self.split}"]
        if self.shots is not None:
            parts.append(f"k{self.shots}")
        parts.append(f"seed{self.seed}")
        parts.append(short_hash(self.identity(), 8))
        return "-".join(parts)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result (hashed into the job id): without local paths
        and execution-only schedule keys; a local checkpoint counts by its content (`weights`)."""
        ident = _strip_keys(dataclasses.asdict(self), self.LOCAL_KEYS)
        ident["schedule"] = {k: v for k, v in ident["schedule"].items() if k not in EXECUTION_ONLY_KEYS
                             and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}
        ident["data"] = {k: v for k, v in ident["data"].items() if k not in EXECUTION_ONLY_DATA_KEYS}
        if self.weights.get("kind") == "file":
            ident.pop("pretrained")
        _checkpoint_identity(ident, self.checkpoint)
        return ident

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not d["checkpoint"]:  # records of training jobs stay as they were
            d.pop("checkpoint")
        d["job_id"] = self.job_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        d.pop("job_id", None)
        d["train"] = ListSpec(**d["train"]) if d.get("train") else None
        d["evals"] = [ListSpec(**e) for e in d["evals"]]
        return cls(**d)


def _checkpoint_identity(ident: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """An evaluated checkpoint counts by its content (sha256) and kind, not by where it lies; a
    training job has none, and its id stays what it was before the field existed."""
    if checkpoint:
        ident["checkpoint"] = {k: checkpoint[k] for k in ("sha256", "kind")}
    else:
        ident.pop("checkpoint", None)


def _strip_keys(obj: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_strip_keys(v, keys) for v in obj]
    return obj


class FileResolver:
    """Role -> local file for one dataset, and a fingerprint of every file handed out.

    Real datasets: split files come from the pinned upstream store (downloaded and verified, or
    copied from `--splits-root`); videos from the data root. The embedded dataset is its own
    splits and data root; its fingerprint is its generation recipe hash, not encoded bytes."""

    def __init__(self, dataset: str, data_root: str | None, splits_root: str | None, cache_dir: str | None = None,
                 embedded_recipe: str | None = None):
        """`embedded_recipe`: the named generation recipe of the embedded dataset (a profile's
        `dataset_recipe`; None: `small`); ignored for other datasets."""
        from harness.data.datasets import get_dataset, video_root

        self.spec = get_dataset(dataset)
        self.provenance: dict[str, Any] = {}
        if self.spec.folder is not None:  # the user's videos: lists generated from the folder
            from harness.data.folder import prepare_folder

            self.root, self.fingerprint = prepare_folder(self.spec, cache_dir)
            self.store, self.video_dir = None, Path(self.spec.folder)
        elif self.spec.generated:
            from harness.data.embedded import (
                GENERATOR_VERSION,
                ensure_embedded_dataset,
                named_recipe,
            )

            self.embedded_recipe = embedded_recipe or "small"
            self.root = ensure_embedded_dataset(Path(cache_dir) / "embedded" if cache_dir else None,
                                                named_recipe(self.embedded_recipe))
            recipe = json.loads((self.root / "recipe.json").read_text())
            self.fingerprint = {"embedded_recipe_hash": recipe["hash"],
                                "generator_version": GENERATOR_VERSION}
            self.store = None
            self.video_dir = video_root(self.spec, self.root)
        else:
            from harness.data.upstream import UpstreamStore

            self.root = None
            self.data_root = data_root
            self.store = UpstreamStore(cache_dir=Path(cache_dir) / "upstream" if cache_dir else None,
                                       splits_root=Path(splits_root) if splits_root else None)
            self.fingerprint = {}
            self.video_dir = video_root(self.spec, data_root)

    def path(self, role: str, **fmt: Any) -> Path:
        rel = self.spec.file(role, **fmt)
        if self.spec.folder is not None:
            return self._generated_file(rel)
        if self.spec.generated:
            path = self.root / rel
            if not path.is_file():
                raise HarnessError(f"embedded dataset at {self.root} lacks {rel}; delete that folder to regenerate it")
            self.provenance[rel] = self.fingerprint
            return path
        if rel.startswith("local:"):
            return self._local(rel.removeprefix("local:"))
        upstream_rel = f"vifi-clip/{rel}"
        path = self.store.path(upstream_rel)
        self.provenance[rel] = self.store.provenance(upstream_rel)
        return path

    def _generated_file(self, rel: str) -> Path:
        """A list generated from a video folder: fingerprinted by its sha256 and the split rule."""
        from harness.data.upstream import file_sha256

        path = self.root / rel
        self.provenance[rel] = {"sha256": file_sha256(path), **self.fingerprint}
        return path

    def has(self, role: str) -> bool:
        return self.spec.has(role)

    def fork(self) -> FileResolver:
        """The same locations with an empty file record: each job records only the files it reads
        (sharing one growing record made a job's id depend on the jobs expanded before it)."""
        twin = copy.copy(self)
        twin.provenance = {}
        return twin

    def _local(self, rel: str) -> Path:
        """A list the user builds from their own copy (SSv2's training list): under the data root,
        fingerprinted by its sha256."""
        from harness.data.datasets import resolve_data_root
        from harness.data.upstream import file_sha256

        path = resolve_data_root(self.data_root) / rel
        if not path.is_file():
            raise HarnessError(f"{path} does not exist: build it from the official annotations with "
                               f"`harness data build-ssv2 --annotations DIR --data-root {path.parents[1]}`")
        self.provenance[f"local:{rel}"] = {"sha256": file_sha256(path), "local": True}
        return path


def _classnames(path: Path) -> list[str]:
    from harness.data.annotations import read_class_csv

    return read_class_csv(path)


def _resolve_pair(resolver: FileResolver, ann_role: str, classes_role: str, **fmt: Any) -> tuple[Path, Path]:
    """An annotation list and its class file (recorded in the resolver's file record)."""
    ann = resolver.path(ann_role, **fmt)
    class_fmt = {k: v for k, v in fmt.items() if k == "split"} if "{split}" in resolver.spec.files.get(classes_role, "") else {}
    return ann, resolver.path(classes_role, **class_fmt)


def _list_spec(resolver: FileResolver, name: str, ann_role: str, classes_role: str, views: list[int], **fmt: Any) -> ListSpec:
    ann, cls_path = _resolve_pair(resolver, ann_role, classes_role, **fmt)
    return ListSpec(name=name, dataset=resolver.spec.name, ann_file=str(ann), class_file=str(cls_path),
                    classnames=_classnames(cls_path), video_root=str(resolver.video_dir),
                    modality=resolver.spec.modality, views=list(views))


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


def default_profile(dataset: str) -> str | None:
    from harness.data.datasets import get_dataset

    return "embedded" if get_dataset(dataset).generated else None


def expand_jobs(req: RunRequest) -> list[JobSpec]:
    """All jobs of a run, in a deterministic order (method-major), validated up front so that a
    bad option or a missing file fails before any training starts. Each job's id depends only on
    that job, never on the other jobs of the invocation or their order."""
    from harness.settings import DataOptions, build_dataclass
    from harness.weights_identity import weights_identity
    from protocols import check_dataset, get_profile, load_protocol

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
    jobs: list[JobSpec] = []
    for method in req.methods:
        options, schedule, recipe = _method_settings(req, protocol, profile, method)
        for split in splits:
            for shots in shots_list:
                jobs.append(_make_job(req, protocol, resolver.fork(), method, options, schedule, recipe, data,
                                      split, shots, weights, phash))
    return jobs


def defined_splits(protocol: dict[str, Any], spec: Any) -> list[int]:
    """The splits a protocol defines on a dataset (zero_shot / few_shot / fully_supervised: 1)."""
    return [s for s in protocol["splits"] if s in spec.split_ids]


def select_splits(protocol: dict[str, Any], spec: Any, requested: list[int] | None,
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


def select_shots(protocol: dict[str, Any], spec: Any, requested: list[int] | None,
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


def _method_settings(req: RunRequest, protocol: dict[str, Any], profile: dict[str, Any] | None,
                     method: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A method's fully resolved options (recipe < profile < --set), schedule, and the record of
    the published recipe applied (harness.recipes)."""
    from harness.recipes import job_recipe
    from harness.settings import resolve_schedule
    from methods.registry import make_config

    recipe = job_recipe(method, protocol["name"], req.dataset, req.schedule_kind)
    options = {**recipe.method_options, **(profile or {}).get("method_options", {}).get(method, {}),
               **req.method_options.get(method, {})}
    overrides = dict(req.schedule_overrides)
    if req.frames is not None:
        overrides.setdefault("frames", req.frames)
    schedule = resolve_schedule(protocol, profile, method, recipe.schedule, overrides, req.dataset)
    return make_config(method, options).to_dict(), schedule, recipe.record


def _make_job(req: RunRequest, protocol: dict[str, Any], resolver: FileResolver, method: str,
              options: dict[str, Any], schedule: Any, recipe: dict[str, Any], data: Any, split: int,
              shots: int | None, weights: dict[str, Any], phash: str) -> JobSpec:
    """One job; `resolver` is this job's own (forked) file record."""
    needs, source, per_class = _description_needs(method, options, data)
    scored = source if "scored_descriptions" in needs else None
    train, evals, eval_refs = _protocol_lists(protocol, resolver, req, split, shots, schedule.views, scored)
    descriptions = _descriptions_ref(resolver, protocol, source, train)
    if descriptions is not None and scored:
        descriptions["evals"] = eval_refs
    _record_description_files(resolver, descriptions, per_class)
    _record_rephrased_files(resolver, method, options, [train, *evals], req)
    return JobSpec(
        method=method, method_options=options, protocol=protocol["name"],
        protocol_version=int(protocol["version"]), protocol_hash=phash, dataset=req.dataset,
        split=split, shots=shots, seed=req.seed, profile=req.profile,
        schedule=dataclasses.asdict(schedule), data=dataclasses.asdict(data),
        backbone=req.backbone, pretrained=req.pretrained, train=train, evals=evals,
        select_on=protocol.get("select_on"), closed_set=bool(protocol["closed_set"]),
        summary=protocol["summary"], descriptions=descriptions,
        file_provenance=dict(resolver.provenance),
        splits_root=req.splits_root, cache_dir=req.cache_dir, recipe=recipe, weights=weights,
    )


def _description_needs(method: str, options: dict[str, Any], data: Any) -> tuple[frozenset[str], str, int | None]:
    """What a method's configuration reads of the class descriptions (the method contract,
    methods/base.py): its description needs, the source of its files (its own, else
    `data.descriptions`), and the sentences per class when the method declares a description need
    at all (`requires`, whatever the configuration: its files are fingerprinted either way)."""
    from methods.base import DESCRIPTION_NEEDS
    from methods.registry import get_method, make_config

    model_cls = get_method(method).model_cls
    config = make_config(method, options)
    per_class = model_cls.descriptions_per_class(config) if model_cls.requires & DESCRIPTION_NEEDS else None
    return model_cls.run_needs(config), model_cls.description_source(config) or data.descriptions, per_class


def _record_description_files(resolver: FileResolver, ref: dict[str, Any] | None, per_class: int | None) -> None:
    """Fingerprint the description files a method reads (`per_class` sentences each: msta's
    `n_descriptions`, ost's `n_descriptors`), those of its evaluation lists included; the embedded
    dataset's are covered by its recipe hash."""
    if ref is None or per_class is None:
        return
    if resolver.spec.generated:
        resolver.provenance["descriptions"] = resolver.fingerprint
        return
    from harness.data.descriptions import description_relpaths

    for one in [ref, *ref.get("evals", {}).values()]:
        rel = description_relpaths(one["source"], one["dataset_key"], per_class, one["subset"], one.get("split"))
        for path in rel.values():
            if path in resolver.store.entries:
                resolver.provenance[path] = resolver.store.provenance(path)


def _record_rephrased_files(resolver: FileResolver, method: str, options: dict[str, Any], lists: list,
                            req: RunRequest) -> None:
    """Fingerprint the rephrased class names of every dataset the job scores, when its method
    needs them (`run_needs` has "rephrased_classnames": FROSTER): pinned files or the sha256 of
    the embedded dataset's generated table (harness.data.rephrased)."""
    from methods.registry import get_method, make_config

    if "rephrased_classnames" not in get_method(method).model_cls.run_needs(make_config(method, options)):
        return
    from harness.data import rephrased

    for dataset in dict.fromkeys(lst.dataset for lst in lists if lst is not None):
        resolver.provenance[f"rephrased:{dataset}"] = rephrased.provenance(dataset, req.cache_dir, req.splits_root)


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
                _resolve_pair(record, "train", "classes")
            else:
                _resolve_pair(record, train_cfg["ann"], train_cfg["classes"], **fmt)
            for ev in protocol.get("evaluate", []):
                ev = _with_fallback(record, ev)
                _resolve_pair(record, ev["ann"], ev["classes"], **fmt)
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


def _protocol_lists(protocol: dict[str, Any], resolver: FileResolver, req: RunRequest, split: int,
                    shots: int | None, views: list[int], describe: str | None = None
                    ) -> tuple[ListSpec | None, list[ListSpec], dict[str, dict[str, Any]]]:
    """The training list, the evaluation lists and, with `describe` (a description source), where
    each evaluation list's class descriptions are (`_class_descriptions_ref`, by list name)."""
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
            refs.update({lst.name: _class_descriptions_ref(resolver, describe, ev["classes"], lst.classnames)
                         for lst in added})
    if "targets" in protocol:
        evals.extend(_zero_shot_targets(protocol, req, views, record=resolver.provenance, describe=describe,
                                        refs=refs))
    return train, evals, refs


def sample_k_shot(entries: list, shots: int, seed: int) -> list:
    """K entries per class drawn deterministically (numpy PCG64 seeded with `seed`), in list order.
    Classes with fewer than K videos keep all of them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        by_class.setdefault(entry.label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_class):
        idx = by_class[label]
        keep.extend(idx if len(idx) <= shots else sorted(rng.choice(idx, size=shots, replace=False).tolist()))
    return [entries[i] for i in sorted(keep)]


def _sampled_few_shot(resolver: FileResolver, shots: int | None, seed: int, cache_dir: str | None) -> ListSpec:
    """Datasets without upstream few-shot lists: K shots per class from the full training list,
    sampled with the run's seed, written once to the cache and fingerprinted like any other file."""
    from harness.data.annotations import read_annotation_list, write_annotation_list
    from harness.data.upstream import file_sha256

    if shots is None or not resolver.has("train"):
        raise HarnessError(f"few_shot on {resolver.spec.name!r}: no upstream few-shot lists and no training list to sample")
    source = resolver.path("train")
    classes_path = resolver.path("classes")
    names = _classnames(classes_path)
    sampled = sample_k_shot(read_annotation_list(source, len(names)), shots, seed)
    from harness.paths import cache_root

    base = cache_root(cache_dir)
    out = base / "sampled" / resolver.spec.name / f"train_few_shot_{shots}_seed{seed}_{file_sha256(source)[:10]}.txt"
    if not out.is_file():
        write_annotation_list(out, sampled)
    resolver.provenance[f"sampled:{out.name}"] = {"sha256": file_sha256(out), "seed": seed, "shots": shots,
                                                  "from": str(source.name)}
    return ListSpec(name="train", dataset=resolver.spec.name, ann_file=str(out), class_file=str(classes_path),
                    classnames=names, video_root=str(resolver.video_dir), modality=resolver.spec.modality)


def _dataset_recipe(req: RunRequest) -> str | None:
    """The embedded dataset recipe the request's profile names (None: the default)."""
    from protocols import get_profile

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
                refs[out[-1].name] = _class_descriptions_ref(resolver, describe, classes_role, out[-1].classnames,
                                                             split=split)
        if record is not None:
            record.update({f"{target}:{rel}": fp for rel, fp in resolver.provenance.items()})
    return out


def _descriptions_ref(resolver: FileResolver, protocol: dict[str, Any], source: str,
                      train: ListSpec | None) -> dict[str, Any] | None:
    """Where the training classes' descriptions are (`_class_descriptions_ref`; MSTA's consistency
    loss, OST's descriptors); None for a dataset without descriptions."""
    if train is None or not resolver.spec.description_key:
        return None
    return _class_descriptions_ref(resolver, source, protocol["train"]["classes"], train.classnames)


def _class_descriptions_ref(resolver: FileResolver, source: str, classes_role: str, classnames: list[str],
                            split: int | None = None) -> dict[str, Any]:
    """Where the descriptions of one class list of `resolver`'s dataset are: source, file key,
    subset / split, and the ids of `classnames` in the files.

    ETL4Video ships `_base` / `_novel` files keyed by the base / novel CSV's ids, and K600 under its
    600-class list; OST ships full-list files only (base / novel classes are looked up by name in
    the dataset's full class list), and K600 per zero-shot split (keyed by the split's CSV)."""
    spec = resolver.spec
    subset, ids = None, list(range(len(classnames)))
    by_name = False
    if source == "etl4video":
        subset = {"base_classes": "base", "novel_classes": "novel"}.get(classes_role)
        key, by_name, split = spec.description_key, classes_role == "zs_classes", None
    else:
        if not spec.ost_key:
            raise HarnessError(f"{source} descriptions: dataset {spec.name!r} has no OST descriptors; use etl4video "
                               "(data.descriptions for msta, ost.descriptors for ost)")
        key, by_name = spec.ost_key, classes_role in ("base_classes", "novel_classes")
        split = split if classes_role == "zs_classes" else None
    if not key:
        raise HarnessError(f"{source} descriptions: dataset {spec.name!r} has none")
    if by_name:
        index = {name: i for i, name in enumerate(_classnames(resolver.path("classes")))}
        missing = [name for name in classnames if name not in index]
        if missing:
            raise HarnessError(f"{source} descriptions of {spec.name!r}: class(es) {missing[:5]} are not in the "
                               "dataset's full class list")
        ids = [index[name] for name in classnames]
    ref = {"source": source, "dataset_key": key, "subset": subset, "class_ids": ids,
           "root": str(resolver.root) if spec.generated else None,
           "fingerprint": resolver.fingerprint or None}
    if split is not None:
        ref["split"] = split
    return ref
