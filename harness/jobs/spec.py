"""One job as typed data (`JobSpec`), its identity and the job id hashed from it.

A JobSpec names exactly what a job computes: the method with its built configuration
(`method_options`, a `MethodConfig`), the protocol and its hash, the lists it trains and evaluates
on (`ListSpec`, with their class names), the typed schedule (`harness.settings.Schedule`) and data
options (`harness.settings.DataOptions`), the weights' identity and the fingerprint of every file
it reads. It is written next to the result (`to_dict`, `config.json`) and is all the engine
needs; the engine reads its typed fields (`job.schedule.frames`), never string keys with defaults
of its own: every default is stated once, on the dataclass.

The job id hashes `identity()`: the record without machine-specific locations and without
execution-only keys, so another machine, more workers or another micro-batch is the same job.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.jobs.identity import (
    EXECUTION_ONLY_DATA_KEYS,
    EXECUTION_ONLY_KEYS,
    IDENTITY_DEFAULTS,
    RESULTS_FORMAT,
    short_hash,
)
from harness.settings import DataOptions, Schedule
from methods.base import MethodConfig
from methods.registry import make_config


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
    #: The method's configuration, built once when the job is expanded (recipe < profile < --set)
    #: and carried to the checks and the engine; recorded as its options dict (`to_dict`).
    method_options: MethodConfig
    protocol: str
    protocol_version: int
    protocol_hash: str
    dataset: str
    split: int
    shots: int | None
    seed: int
    profile: str | None
    schedule: Schedule
    data: DataOptions
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
        """The job's record (config.json, metrics.json): plain JSON values, the typed fields as
        dicts of every key."""
        d = dataclasses.asdict(self)
        if not d["checkpoint"]:  # records of training jobs stay as they were
            d.pop("checkpoint")
        d["job_id"] = self.job_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        """A job from its record; keys a record of an older version lacks take today's defaults
        (the dataclasses' own), so an old record reads as the job it was."""
        d = dict(d)
        d.pop("job_id", None)
        d["method_options"] = make_config(d["method"], d["method_options"])
        d["schedule"] = Schedule(**d["schedule"])
        d["data"] = DataOptions(**d["data"])
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
