"""Evaluation protocols as versioned data (`*.yaml` beside this file) and named profiles.

A protocol names *roles* (`b2n_train`, `base_classes`, ...) that each dataset definition maps to
its upstream file names (`harness.data.datasets`), plus a shared schedule and per-dataset test views.
Each method's published recipe per (protocol, dataset) lives in `recipes/<method>.yaml`
(`harness.recipes`; the full recipe applies with `--schedule paper`).
"""
from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, unknown_name_error

HERE = Path(__file__).resolve().parent


def list_protocols() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml") if p.stem != "profiles")


@cache
def _load(name: str) -> dict[str, Any]:
    path = HERE / f"{name}.yaml"
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_protocol(name: str) -> dict[str, Any]:
    """The protocol definition (a deep copy: callers may not mutate the cached one)."""
    if name not in list_protocols():
        raise unknown_name_error("protocol", name, list_protocols())
    return copy.deepcopy(_load(name))


def load_profiles() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(_load("profiles"))


def get_profile(name: str) -> dict[str, Any]:
    profiles = load_profiles()
    if name not in profiles:
        raise unknown_name_error("profile", name, profiles)
    return profiles[name]


def test_views(protocol: dict[str, Any], dataset: str) -> list[int]:
    views = protocol.get("views", {})
    return list(views.get(dataset, views.get("default", [1, 1])))


def check_dataset(protocol: dict[str, Any], dataset: str) -> None:
    if ("folder" if dataset.startswith("folder:") else dataset) not in protocol["datasets"]:
        raise HarnessError(
            f"protocol {protocol['name']!r} is not defined on dataset {dataset!r}; "
            f"it runs on: {', '.join(protocol['datasets'])}"
        )
