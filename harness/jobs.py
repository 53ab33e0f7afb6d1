"""Expand `harness run` into jobs: one job = (method, protocol, dataset, split, shots, seed,
overrides), each naming exactly the files and class lists it trains and evaluates on.

Data flows one way: protocol YAML (roles) -> dataset definition (role -> upstream file) ->
resolved local file (verified sha256, or the embedded dataset's recipe) -> JobSpec. The JobSpec
is plain data: it is hashed into the job id, written next to the result, and is all the engine
needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


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
        """Everything that determines the result (hashed into the job id), without local paths."""
        return _strip_keys(dataclasses.asdict(self), self.LOCAL_KEYS)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["job_id"] = self.job_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        d.pop("job_id", None)
        d["train"] = ListSpec(**d["train"]) if d.get("train") else None
        d["evals"] = [ListSpec(**e) for e in d["evals"]]
        return cls(**d)


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

    def __init__(self, dataset: str, data_root: str | None, splits_root: str | None, cache_dir: str | None = None):
        from harness.data.datasets import get_dataset, video_root

        self.spec = get_dataset(dataset)
        self.provenance: dict[str, Any] = {}
        if self.spec.generated:
            from harness.data.embedded import (
                GENERATOR_VERSION,
                ensure_embedded_dataset,
            )

            self.root = ensure_embedded_dataset(Path(cache_dir) / "embedded" if cache_dir else None)
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

    def has(self, role: str) -> bool:
        return self.spec.has(role)

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


def _list_spec(resolver: FileResolver, name: str, ann_role: str, classes_role: str, views: list[int], **fmt: Any) -> ListSpec:
    ann = resolver.path(ann_role, **fmt)
    class_fmt = {k: v for k, v in fmt.items() if k == "split"} if "{split}" in resolver.spec.files.get(classes_role, "") else {}
    cls_path = resolver.path(classes_role, **class_fmt)
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


def default_profile(dataset: str) -> str | None:
    from harness.data.datasets import get_dataset

    return "embedded" if get_dataset(dataset).generated else None


def expand_jobs(req: RunRequest) -> list[JobSpec]:
    """All jobs of a run, in a deterministic order (method-major), validated up front so that a
    bad option or a missing file fails before any training starts."""
    from harness.settings import DataOptions, build_dataclass, resolve_schedule
    from methods.registry import make_config
    from protocols import check_dataset, get_profile, load_protocol

    protocol = load_protocol(req.protocol)
    check_dataset(protocol, req.dataset)
    profile = get_profile(req.profile) if req.profile else None
    splits = req.splits or (profile or {}).get("splits") or protocol["splits"]
    if protocol["name"] in ("zero_shot", "few_shot", "fully_supervised"):
        splits = [s for s in splits if s == 1] or [1]
    shots_list: list[int | None] = [None]
    if "shots" in protocol:
        shots_list = list(req.shots or (profile or {}).get("shots") or protocol["shots"])
    data = build_dataclass(DataOptions, dict(req.data_overrides), "data")
    resolver = FileResolver(req.dataset, req.data_root, req.splits_root, req.cache_dir)
    bad = [s for s in splits if s not in resolver.spec.split_ids]
    if bad:
        raise HarnessError(f"--splits: {bad} not available for {req.dataset} (has {list(resolver.spec.split_ids)})")

    jobs: list[JobSpec] = []
    for method in req.methods:
        options = {**(profile or {}).get("method_options", {}).get(method, {}), **req.method_options.get(method, {})}
        config = make_config(method, options)
        overrides = dict(req.schedule_overrides)
        if req.frames:
            overrides.setdefault("frames", req.frames)
        schedule = resolve_schedule(protocol, profile, method, req.schedule_kind == "paper", overrides, req.dataset)
        for split in splits:
            for shots in shots_list:
                train, evals = _protocol_lists(protocol, resolver, req, split, shots, schedule.views)
                job = JobSpec(
                    method=method, method_options=config.to_dict(), protocol=protocol["name"],
                    protocol_version=int(protocol["version"]), protocol_hash="", dataset=req.dataset,
                    split=split, shots=shots, seed=req.seed, profile=req.profile,
                    schedule=dataclasses.asdict(schedule), data=dataclasses.asdict(data),
                    backbone=req.backbone, pretrained=req.pretrained, train=train, evals=evals,
                    select_on=protocol.get("select_on"), closed_set=bool(protocol["closed_set"]),
                    summary=protocol["summary"],
                    descriptions=_descriptions_ref(resolver, protocol, data, train),
                    file_provenance=dict(resolver.provenance),
                    splits_root=req.splits_root, cache_dir=req.cache_dir,
                )
                job.protocol_hash = protocol_hash(protocol, req.profile, job.file_provenance)
                jobs.append(job)
    return jobs


def protocol_hash(protocol: dict[str, Any], profile: str | None, files: dict[str, Any]) -> str:
    """canonical JSON of the definition + profile + sha256 (or embedded recipe) of each file."""
    return short_hash({"protocol": protocol, "profile": profile, "files": files}, 12)


def _protocol_lists(protocol: dict[str, Any], resolver: FileResolver, req: RunRequest, split: int,
                    shots: int | None, views: list[int]) -> tuple[ListSpec | None, list[ListSpec]]:
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
        if not resolver.has(ev["ann"]) and ev.get("fallback"):
            ev = {**ev, "ann": ev["fallback"]}
        evals.append(_list_spec(resolver, ev["name"], ev["ann"], ev["classes"], views, **fmt))
        if protocol.get("single_view_too") and list(views) != [1, 1]:  # the 1x1 number beside multi-view
            evals.append(_list_spec(resolver, f"{ev['name']}@1x1", ev["ann"], ev["classes"], [1, 1], **fmt))
    if "targets" in protocol:
        evals.extend(_zero_shot_targets(protocol, req, views))
    return train, evals


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


def _zero_shot_targets(protocol: dict[str, Any], req: RunRequest, views: list[int]) -> list[ListSpec]:
    spec = protocol["evaluate_target"]
    out = []
    for target in protocol["targets"].get(req.dataset, []):
        resolver = FileResolver(target, req.data_root, req.splits_root, req.cache_dir)
        for split in spec["eval_splits"]:
            classes_role = spec["classes"] if resolver.has(spec["classes"]) else "classes"
            out.append(_list_spec(resolver, f"{target}/split{split}", spec["ann"], classes_role, views, split=split))
    return out


def _descriptions_ref(resolver: FileResolver, protocol: dict[str, Any], data: Any, train: ListSpec | None) -> dict[str, Any] | None:
    """Where MSTA's consistency loss finds the training classes' descriptions.

    ETL4Video ships `_base` files keyed by the base CSV's ids; OST only has full-list files, so
    the training classes are looked up by name in the dataset's full class list."""
    spec = resolver.spec
    if train is None or not spec.description_key:
        return None
    source = data.descriptions
    on_base = protocol["train"]["classes"] == "base_classes"
    if source == "etl4video":
        key, subset, ids = spec.description_key, ("base" if on_base else None), list(range(len(train.classnames)))
    else:
        if not spec.ost_key:
            raise HarnessError(f"data.descriptions=ost: dataset {spec.name!r} has no OST descriptors; use etl4video")
        full = _classnames(resolver.path("classes")) if on_base else train.classnames
        index = {name: i for i, name in enumerate(full)}
        key, subset, ids = spec.ost_key, None, [index[name] for name in train.classnames]
    return {"source": source, "dataset_key": key, "subset": subset, "class_ids": ids,
            "root": str(resolver.root) if spec.generated else None,
            "fingerprint": resolver.fingerprint or None}
