"""Published training recipes as data (`protocols/recipes/<method>.yaml`) and which part of them a
job applies.

A recipe file holds, per protocol, a protocol-level `default` and the datasets the official code
ships a configuration for (`datasets:`, each with its overrides); `common:` applies to every
protocol of the method. Resolution for (method, protocol, dataset):

    common < protocols.<p>.default < protocols.<p>.datasets.<d>

and the result is split by what it sets:

- method options (`lr`, `weight_decay`, `options: {...}`): applied under both schedules, so that
  each method trains with its own optimiser settings even on the identical (shared) protocol;
- schedule values (epochs, warm-up, batch, frames, views, selection, betas, eps, final lr, label
  smoothing, gradient clipping): applied only with `--schedule paper` (the shared schedule keeps them identical);
- `not_applied`: ingredients of the published recipe the engine does not implement (mixup,
  RandAugment, ...), recorded in every result that runs the published recipe.

Precedence in a job: recipe < profile < `--set`. The resolved recipe is stored in the job config
(`JobSpec.recipe`), so it is part of the job's identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

RECIPES_DIR = Path(__file__).resolve().parents[1] / "protocols" / "recipes"

#: Keys that become method options.
METHOD_KEYS = ("lr", "weight_decay")
#: Keys that become `schedule.*` values under `--schedule paper`.
SCHEDULE_KEYS = ("epochs", "warmup_epochs", "batch_size", "frames", "views", "select", "betas", "eps",
                 "lr_min_ratio", "label_smoothing", "grad_clip")
META_KEYS = ("source", "options", "not_applied")
ENTRY_KEYS = frozenset(METHOD_KEYS + SCHEDULE_KEYS + META_KEYS)
FILE_KEYS = frozenset(("method", "repo", "commit", "common", "protocols"))

#: How a job's recipe was found.
PUBLISHED, PROTOCOL_DEFAULT, METHOD_DEFAULT = "published", "protocol default", "method default"


@dataclass
class Recipe:
    """The recipe values one job uses, split by where they go."""

    method: str
    protocol: str
    dataset: str
    scope: str
    source: str
    method_options: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    not_applied: dict[str, Any] = field(default_factory=dict)

    def for_run(self, schedule_kind: str) -> AppliedRecipe:
        """What a run with `--schedule shared|paper` takes from this recipe."""
        paper = schedule_kind == "paper"
        return AppliedRecipe(
            method_options=dict(self.method_options),
            schedule=dict(self.schedule) if paper else {},
            record={"schedule_kind": schedule_kind, "scope": self.scope, "source": self.source,
                    "method_options": dict(self.method_options),
                    "schedule": dict(self.schedule) if paper else {},
                    "not_applied": dict(self.not_applied) if paper else {}},
        )


@dataclass
class AppliedRecipe:
    method_options: dict[str, Any]
    schedule: dict[str, Any]
    record: dict[str, Any]


def recipe_path(method: str) -> Path:
    return RECIPES_DIR / f"{method}.yaml"


@cache
def _load(method: str) -> dict[str, Any] | None:
    path = recipe_path(method)
    if not path.is_file():
        return None
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    _check_file(path, data, method)
    return data


def _check_file(path: Path, data: dict[str, Any], method: str) -> None:
    """Unknown keys are errors naming the file and the key (a typo must not silently drop a value)."""
    bad = set(data) - FILE_KEYS
    if bad:
        raise HarnessError(f"{path}: unknown key(s) {sorted(bad)}; expected {sorted(FILE_KEYS)}")
    if data.get("method") != method:
        raise HarnessError(f"{path}: method: {data.get('method')!r} does not match the file name {method!r}")
    entries = [("common", data.get("common") or {})]
    for proto, spec in (data.get("protocols") or {}).items():
        extra = set(spec or {}) - {"default", "datasets"}
        if extra:
            raise HarnessError(f"{path}: protocols.{proto}: unknown key(s) {sorted(extra)}; expected default, datasets")
        entries.append((f"protocols.{proto}.default", (spec or {}).get("default") or {}))
        for ds, over in ((spec or {}).get("datasets") or {}).items():
            entries.append((f"protocols.{proto}.datasets.{ds}", over or {}))
    for where, entry in entries:
        bad = set(entry) - ENTRY_KEYS
        if bad:
            raise HarnessError(f"{path}: {where}: unknown key(s) {sorted(bad)}; expected {sorted(ENTRY_KEYS)}")


def _merge(*entries: dict[str, Any]) -> dict[str, Any]:
    """Later entries win; `options` and `not_applied` merge key by key; `source` is the most
    specific entry's source followed by the method-wide one (the first entry's)."""
    out: dict[str, Any] = {}
    for entry in entries:
        for key, value in entry.items():
            if key in ("options", "not_applied"):
                out[key] = {**out.get(key, {}), **(value or {})}
            else:
                out[key] = value
    sources = [e["source"] for e in entries[1:] if e.get("source")][-1:] + [entries[0].get("source")]
    out["source"] = "; ".join(str(s) for s in sources if s)
    return out


def resolve_recipe(method: str, protocol: str, dataset: str) -> Recipe:
    """The recipe for (method, protocol, dataset): published where the official code has one,
    else the method's protocol-level default, else nothing (the method's option defaults)."""
    data = _load(method)
    spec = ((data or {}).get("protocols") or {}).get(protocol)
    if data is None or spec is None:
        return Recipe(method, protocol, dataset, METHOD_DEFAULT, "no recipe: the method's option defaults")
    datasets = spec.get("datasets") or {}
    published = dataset in datasets
    merged = _merge(data.get("common") or {}, spec.get("default") or {}, (datasets.get(dataset) or {}) if published else {})
    origin = f"{data['repo']}@{data['commit']}" if data.get("repo") else "no official code"
    scope = PUBLISHED if published else PROTOCOL_DEFAULT
    note = "" if published else f" [no published recipe for {dataset}: protocol-level default]"
    source = f"{origin}: " + merged.pop("source") + note
    options = {k: merged[k] for k in METHOD_KEYS if k in merged}
    options.update(merged.get("options", {}))
    schedule = {k: merged[k] for k in SCHEDULE_KEYS if k in merged}
    return Recipe(method, protocol, dataset, scope, source, options, schedule, dict(merged.get("not_applied", {})))


def job_recipe(method: str, protocol: str, dataset: str, schedule_kind: str) -> AppliedRecipe:
    """The one entry point for job expansion: what `method` takes from its recipe in this run."""
    return resolve_recipe(method, protocol, dataset).for_run(schedule_kind)


def recipe_rows(methods: list[str], protocols: list[str]) -> list[Recipe]:
    """Every recipe entry of `methods` x `protocols`: one row per published dataset, plus the
    protocol-level default that every other dataset of the protocol (e.g. `embedded`) uses."""
    from protocols import load_protocol

    rows = []
    for method in methods:
        data = _load(method)
        for protocol in protocols:
            spec = ((data or {}).get("protocols") or {}).get(protocol)
            if spec is None:
                rows.append(resolve_recipe(method, protocol, "*"))
                continue
            published = list(spec.get("datasets") or {})
            for ds in published:
                rows.append(resolve_recipe(method, protocol, ds))
            others = [d for d in load_protocol(protocol)["datasets"] if d not in published]
            default = resolve_recipe(method, protocol, others[0] if others else "*")
            default.dataset = ", ".join(others) if others else "(other datasets)"
            default.source = default.source.split(" [no published", 1)[0]
            rows.append(default)
    return rows


def format_recipes(rows: list[Recipe]) -> str:
    """Plain-text listing for `harness ls recipes`."""
    lines = ["Recipes (method / protocol / dataset: method options | --schedule paper values | not applied):",
             "  method options (lr, wd, options) apply under both schedules; the schedule values only with "
             "--schedule paper; `protocol default` rows are what datasets without a published recipe use."]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r.method_options.items()) or "-"
        sched = ", ".join(f"{k}={v}" for k, v in r.schedule.items()) or "-"
        lines.append(f"  {r.method} / {r.protocol} / {r.dataset} [{r.scope}]")
        lines.append(f"      options: {opts}")
        lines.append(f"      paper schedule: {sched}")
        if r.not_applied:
            lines.append("      not applied: " + ", ".join(f"{k}={v}" for k, v in r.not_applied.items()))
        lines.append(f"      source: {r.source}")
    return "\n".join(lines)
