"""Suites as data: one YAML file per published table the harness can run (protocols/suites/).

A suite names its source (paper / table / page or README lines), the methods, protocol,
datasets, splits or shots, the recipe (`schedule: paper`: each method's published recipe), the
frames and views the table used (applied to the runs), the backbone and weights, which rows of
the quoted-rows file (harness/reports/published.csv, or `published.file`) hold its numbers, and
the tolerance (default 1.0 point). The numbers themselves live only in the quoted-rows file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, unknown_name_error

SUITES_DIR = Path(__file__).resolve().parents[2] / "protocols" / "suites"
DEFAULT_TOLERANCE = 1.0
#: Metrics each protocol's table reports per dataset (few-shot: K=<k>, zero-shot: target datasets).
B2N_METRICS = ("Base", "Novel", "HM")

_KEYS = {"title", "source", "protocol", "schedule", "methods", "datasets", "splits", "shots", "backbone",
         "pretrained", "frames", "views", "seed", "profile", "sets", "published", "tolerance", "notes"}


@dataclass
class Suite:
    name: str
    path: Path
    title: str
    source: dict[str, str]
    protocol: str
    methods: list[str]
    datasets: list[str]
    schedule: str = "paper"
    splits: list[int] | None = None
    shots: list[int] | None = None
    backbone: str = "ViT-B-16"
    pretrained: str | dict[str, str] = "openai"
    frames: int | dict[str, int] | None = None
    views: list[int] | dict[str, list[int]] | None = None
    seed: int | None = None
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    published_file: Path | None = None
    published_source: str | dict[str, str] | None = None
    published_backbone: str | None = None  # how the quoted-rows file names the runs' backbone, if differently
    tolerance: float = DEFAULT_TOLERANCE
    notes: list[str] = field(default_factory=list)

    def frames_for(self, method: str, dataset: str) -> int | None:
        return _pick(self.frames, method, dataset)

    def views_for(self, method: str, dataset: str) -> list[int] | None:
        found = _pick(self.views, method, dataset)
        return list(found) if found is not None else None

    def source_for(self, method: str) -> str | None:
        if isinstance(self.published_source, dict):
            return self.published_source.get(method)
        return self.published_source

    @property
    def needs_weights_file(self) -> bool:
        """The suite's weights are a file the user has (`pretrained: {file: ...}`)."""
        return isinstance(self.pretrained, dict)

    def source_text(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.source.items())


def _pick(value: Any, method: str, dataset: str) -> Any:
    """A suite value given once, or per method / per dataset (`default` for the rest)."""
    if not isinstance(value, dict):
        return value
    for key in (method, dataset, "default"):
        if key in value:
            return value[key]
    return None


def list_suites(folder: Path = SUITES_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_suite(name: str, folder: Path = SUITES_DIR) -> Suite:
    """A suite by name (protocols/suites/<name>.yaml) or by path to its YAML file; every problem
    of the file is listed, one line each, naming the file and key."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name not in list_suites(folder):
            raise unknown_name_error("suite", name, list_suites(folder))
        path = folder / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise HarnessError(f"{path}: cannot read the suite ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a suite is a mapping (title, source, protocol, methods, datasets, ...)")
    problems = [f"{path}: unknown key {k!r}; valid: {', '.join(sorted(_KEYS))}" for k in data if k not in _KEYS]
    for key in ("title", "source", "protocol", "methods", "datasets", "published"):
        if key not in data:
            problems.append(f"{path}: missing key {key!r}")
    if problems:
        raise HarnessError("\n".join(problems))
    published = data["published"] if isinstance(data["published"], dict) else {"source": data["published"]}
    source = data["source"] if isinstance(data["source"], dict) else {"source": str(data["source"])}
    file = published.get("file")
    suite = Suite(
        name=path.stem, path=path, title=str(data["title"]), source={str(k): str(v) for k, v in source.items()},
        protocol=str(data["protocol"]), methods=[str(m) for m in data["methods"]],
        datasets=[str(d) for d in data["datasets"]], schedule=str(data.get("schedule", "paper")),
        splits=data.get("splits"), shots=data.get("shots"), backbone=str(data.get("backbone", "ViT-B-16")),
        pretrained=data.get("pretrained", "openai"), frames=data.get("frames"), views=data.get("views"),
        seed=data.get("seed"), profile=data.get("profile"), sets=[str(s) for s in data.get("sets") or []],
        published_file=(path.parent / file) if file else None, published_source=published.get("source"),
        published_backbone=published.get("backbone_as"),
        tolerance=float(data.get("tolerance", DEFAULT_TOLERANCE)), notes=[str(n) for n in data.get("notes") or []])
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Names that must exist (methods, protocol, datasets, profile), schedule, tolerance."""
    from methods.registry import list_methods
    from protocols import list_protocols, load_protocol

    problems = []
    where = str(suite.path)
    known = list_methods()
    problems += [f"{where}: methods: unknown method {m!r}" for m in suite.methods if m not in known]
    if suite.protocol not in list_protocols():
        problems.append(f"{where}: protocol {suite.protocol!r}: one of {', '.join(list_protocols())}")
    else:
        defined = load_protocol(suite.protocol)["datasets"]
        problems += [f"{where}: dataset {d!r} is not in protocol {suite.protocol!r} ({', '.join(defined)})"
                     for d in suite.datasets if d not in defined]
    if suite.schedule not in ("paper", "shared"):
        problems.append(f"{where}: schedule {suite.schedule!r}: paper or shared")
    if suite.tolerance <= 0:
        problems.append(f"{where}: tolerance must be > 0 points, got {suite.tolerance}")
    if suite.needs_weights_file and "file" not in suite.pretrained:
        problems.append(f"{where}: pretrained: a tag (openai) or {{file: <what the user must pass as --pretrained>}}")
    if suite.profile is not None:
        from protocols import load_profiles

        if suite.profile not in load_profiles():
            problems.append(f"{where}: profile {suite.profile!r} unknown")
    if problems:
        raise HarnessError("\n".join(problems))
