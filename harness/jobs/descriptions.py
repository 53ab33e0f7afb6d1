"""Where a job's class descriptions are (the `descriptions` reference of a JobSpec), and the
fingerprints of the class-text files it reads (descriptions; FROSTER's rephrased class names).

Why in the job layer: which file holds a class's sentences depends on the protocol (base classes
read ETL4Video's `_base` files), the training list's classes and the description source
(`data.descriptions`); the reference is part of the job's identity, and the engine and the
up-front check load it with `harness.data.descriptions.load_job_descriptions`.
"""
from __future__ import annotations

from typing import Any

from harness.data import rephrased
from harness.data.descriptions import description_relpaths
from harness.data.resolver import FileResolver
from harness.errors import HarnessError
from harness.jobs.spec import ListSpec
from harness.settings import DataOptions
from methods.base import MethodConfig
from methods.registry import get_method


def descriptions_ref(resolver: FileResolver, protocol: dict[str, Any], data: DataOptions,
                     train: ListSpec | None) -> dict[str, Any] | None:
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
        full = resolver.classnames("classes") if on_base else train.classnames
        index = {name: i for i, name in enumerate(full)}
        key, subset, ids = spec.ost_key, None, [index[name] for name in train.classnames]
    return {"source": source, "dataset_key": key, "subset": subset, "class_ids": ids,
            "root": str(resolver.root) if spec.generated else None,
            "fingerprint": resolver.fingerprint or None}


def record_description_files(resolver: FileResolver, ref: dict[str, Any] | None, method: str,
                             config: MethodConfig) -> None:
    """Fingerprint the description files a method that declares the need reads (`requires`,
    whatever its configuration; `descriptions_per_class(config)` sentences each: msta's
    `n_descriptions`); the embedded dataset's are covered by its recipe hash."""
    model_cls = get_method(method).model_cls
    if ref is None or "descriptions" not in model_cls.requires:
        return
    if resolver.spec.generated:
        resolver.provenance["descriptions"] = resolver.fingerprint
        return
    per_class = model_cls.descriptions_per_class(config)
    rel = description_relpaths(ref["source"], ref["dataset_key"], per_class, ref["subset"])
    for path in rel.values():
        if path in resolver.store.entries:
            resolver.provenance[path] = resolver.store.provenance(path)


def record_rephrased_files(resolver: FileResolver, method: str, config: MethodConfig, lists: list[ListSpec | None],
                           cache_dir: str | None, splits_root: str | None) -> None:
    """Fingerprint the rephrased class names of every dataset the job scores, when its method
    needs them (`run_needs` has "rephrased_classnames": FROSTER): pinned files or the sha256 of
    the embedded dataset's generated table (harness.data.rephrased)."""
    if "rephrased_classnames" not in get_method(method).model_cls.run_needs(config):
        return
    for dataset in dict.fromkeys(lst.dataset for lst in lists if lst is not None):
        resolver.provenance[f"rephrased:{dataset}"] = rephrased.provenance(dataset, cache_dir, splits_root)
