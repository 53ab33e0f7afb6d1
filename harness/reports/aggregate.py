"""Collect finished jobs from several results folders into one frame, one row per (job, eval).

A job id names one exact configuration, split and seed, so the same id found in several folders
is one result: it is counted once. When its copies disagree (different metrics or code version)
the first is kept and the disagreement is reported, never averaged away.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.engine.accounting import accounting_columns
from harness.errors import HarnessError
from harness.reports.rows import config_key, job_rows, vocabulary_fields

#: Accuracy within this many points of chance (100 / classes) makes a row untrustworthy.
CHANCE_MARGIN = 2.0

FLAG_CHANCE = "near chance"
FLAG_VIDEOS = "videos missing"
FLAG_PROFILE = "short profile"


@dataclass
class Collected:
    """What was found in the results folders."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0  # identical copies of a job found in more than one folder
    conflicts: list[str] = field(default_factory=list)  # one line per job id whose copies disagree
    folders: dict[str, Path] = field(default_factory=dict)  # job id -> the job folder of the kept copy


def _fingerprint(record: dict[str, Any]) -> str:
    """What must agree between two copies of one job: its evaluations and code version."""
    code = (record.get("provenance") or {}).get("code") or {}
    evals = {name: {k: ev.get(k) for k in ("top1", "top5", "n")} for name, ev in record["metrics"]["evals"].items()}
    return json.dumps({"evals": evals, "git_sha": code.get("git_sha")}, sort_keys=True)


def collect(folders: list[Path]) -> Collected:
    """Every finished and failed job of `folders`; a job id counted once (see module doc)."""
    from harness.store import RunStore

    out = Collected()
    seen: dict[str, tuple[str, Path]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for folder in folders:
        store = RunStore(Path(folder))
        if not (store.root / "jobs").is_dir():
            raise HarnessError(f"{store.root}: not a results directory (no jobs/ folder)")
        for record in store.finished_records():
            job_id = record["job_id"]
            fingerprint = _fingerprint(record)
            if job_id in seen:
                first_fp, first_folder = seen[job_id]
                if fingerprint == first_fp:
                    out.duplicates += 1
                else:
                    out.conflicts.append(f"{job_id}: {first_folder} and {folder} differ in metrics or code "
                                         f"version (kept {first_folder})")
                continue
            seen[job_id] = (fingerprint, Path(folder))
            out.records.append(record)
            out.folders[job_id] = store.root / "jobs" / job_id
        for failure in store.failed_records():
            failed.setdefault(str(failure.get("job_id")), failure)
    out.failures = [f for job_id, f in failed.items() if job_id not in seen]
    return out


def eval_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """`rows.job_rows` (one row per job and evaluation set) plus what the layouts
    and the trust flags need: chance level, videos used / listed, the flags themselves."""
    df = job_rows(records)
    if df.empty:
        return df
    extra = []
    for rec in records:
        for ev in rec["metrics"]["evals"].values():
            videos = ev.get("videos") or {}
            extra.append({"used": videos.get("used"), "listed": videos.get("listed"),
                          "chance": 100.0 / ev["classes"] if ev.get("classes") else None})
    df = pd.concat([df, pd.DataFrame(extra)], axis=1)
    df["flags"] = [trust_flags(row) for row in df.to_dict("records")]
    return df


def trust_flags(row: dict[str, Any]) -> tuple[str, ...]:
    """Why a result cannot be trusted: accuracy on unseen classes (novel, zero-shot) within
    CHANCE_MARGIN points of chance, fewer videos used than listed, a schedule-shortening profile."""
    flags = []
    unseen = row["protocol"] == "zero_shot" or row["eval"] == "novel"
    if unseen and row.get("chance") is not None and row["top1"] is not None and row["top1"] <= row["chance"] + CHANCE_MARGIN:
        flags.append(FLAG_CHANCE)
    used, listed = row.get("used"), row.get("listed")
    if (used is not None and listed is not None and used < listed) or (row.get("missing") or 0) > 0:
        flags.append(FLAG_VIDEOS)
    if row["profile"] not in ("-", None):
        flags.append(FLAG_PROFILE)
    return tuple(flags)


def per_job_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per job: every identity field (`config_key` flattened, plus split, seed, shots),
    parameters, GMACs and each evaluation's numbers as `<eval>.top1` etc. Numbers stay numbers."""
    rows = []
    for rec in records:
        job, metrics = rec["job"], rec["metrics"]
        params = metrics.get("params") or {}
        row: dict[str, Any] = {"job_id": rec["job_id"], "split": job.get("split"), "seed": job.get("seed"),
                               "shots": job.get("shots")}
        row.update({k: _scalar(v) for k, v in config_key(job).items()})
        row.update({"trainable": params.get("trainable"), "total": params.get("total"),
                    "pct_of_backbone": params.get("pct_of_backbone"),
                    "gmacs_per_view": (metrics.get("flops_per_view") or {}).get("gmacs"),
                    "train_seconds": (metrics.get("train") or {}).get("seconds"),
                    "selected": (metrics.get("train") or {}).get("selected"),
                    "git_sha": ((rec.get("provenance") or {}).get("code") or {}).get("git_sha")})
        row.update(accounting_columns(metrics))
        row.update({k: v for k, v in vocabulary_fields(metrics).items() if k in ("vocab_before", "vocab_after")})
        for name, ev in metrics["evals"].items():
            videos = ev.get("videos") or {}
            row.update({f"{name}.top1": ev.get("top1"), f"{name}.top5": ev.get("top5"), f"{name}.n": ev.get("n"),
                        f"{name}.classes": ev.get("classes"),
                        f"{name}.views": "x".join(map(str, ev.get("views", [1, 1]))),
                        f"{name}.videos_used": videos.get("used"), f"{name}.videos_listed": videos.get("listed")})
        rows.append(row)
    return pd.DataFrame(rows)


def _scalar(value: Any) -> Any:
    """A CSV cell: lists become 'a,b' text, everything else as is (numbers stay numbers)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value
