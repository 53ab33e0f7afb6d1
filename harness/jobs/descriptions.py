"""Where a job's class descriptions are (the `descriptions` reference of a JobSpec), and the
fingerprints of the class-text files it reads (descriptions; FROSTER's rephrased class names).

Why in the job layer: which file holds a class's sentences depends on the protocol (base classes
read ETL4Video's `_base` files), the class lists' classes and the description source
(the method's own, else `data.descriptions`); the reference is part of the job's identity, and the engine and the
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
from methods.base import DESCRIPTION_NEEDS, MethodConfig
from methods.registry import get_method


def description_needs(method: str, config: MethodConfig, data: DataOptions) -> tuple[frozenset[str], str, int | None]:
    """What a method's configuration reads of the class descriptions (the method contract,
    methods/base.py): its description needs, the source of its files (its own, else
    `data.descriptions`), and the sentences per class when the method declares a description need
    at all (`requires`, whatever the configuration: its files are fingerprinted either way)."""
    model_cls = get_method(method).model_cls
    per_class = model_cls.descriptions_per_class(config) if model_cls.requires & DESCRIPTION_NEEDS else None
    return model_cls.run_needs(config), model_cls.description_source(config) or data.descriptions, per_class


def descriptions_ref(resolver: FileResolver, protocol: dict[str, Any], source: str,
                     train: ListSpec | None) -> dict[str, Any] | None:
    """Where the training classes' descriptions are (`class_descriptions_ref`; MSTA's consistency
    loss, OST's descriptors); None for a dataset without descriptions."""
    if train is None or not resolver.spec.description_key:
        return None
    return class_descriptions_ref(resolver, source, protocol["train"]["classes"], train.classnames)


def class_descriptions_ref(resolver: FileResolver, source: str, classes_role: str, classnames: list[str],
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
        index = {name: i for i, name in enumerate(resolver.classnames("classes"))}
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


def record_description_files(resolver: FileResolver, ref: dict[str, Any] | None, per_class: int | None) -> None:
    """Fingerprint the description files a method reads (`per_class` sentences each: msta's
    `n_descriptions`, ost's `n_descriptors`), those of its evaluation lists included; the embedded
    dataset's are covered by its recipe hash."""
    if ref is None or per_class is None:
        return
    if resolver.spec.generated:
        resolver.provenance["descriptions"] = resolver.fingerprint
        return
    for one in [ref, *ref.get("evals", {}).values()]:
        rel = description_relpaths(one["source"], one["dataset_key"], per_class, one["subset"], one.get("split"))
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
