"""Accuracy metrics and the protocol summaries the papers report.

Kept free of torch/mmengine imports beyond numpy so they can be checked against hand-computed
values and reused by the report code.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent. `scores` (N, C); ties are broken by class index (stable sort),
    k is capped at C (top-5 over 3 classes is top-3, i.e. 100%)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} do not match")
    if scores.shape[0] == 0:
        return {f"top{k}": float("nan") for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (order[:, :kk] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = 100.0 * float(hit.mean())
    return out


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N); 0 when both are 0."""
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


def spread(values: Sequence[float]) -> float:
    """The standard deviation of runs (splits x seeds) that every table reports: the sample std
    (ddof = 1, the one the standard error over runs, std / sqrt(k), builds on), NaN values
    dropped, and NaN (shown as `-`) with fewer than two runs, where no spread is defined (a single
    run is not a spread of 0)."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def base2novel_summary(per_split: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Across splits, as the papers do: HM of the mean base and mean novel accuracy; plus the
    spread (`spread`: sample std, NaN for one run) of the per-run base, novel and HM, reported
    separately and labelled."""
    if not per_split:
        raise ValueError("no splits")
    bases = [b for b, _ in per_split]
    novels = [n for _, n in per_split]
    mean_b = float(np.mean(bases))
    mean_n = float(np.mean(novels))
    hms = [harmonic_mean(b, n) for b, n in per_split]
    return {
        "base": mean_b,
        "novel": mean_n,
        "hm": harmonic_mean(mean_b, mean_n),
        "hm_split_std": spread(hms),
        "base_std": spread(bases),
        "novel_std": spread(novels),
        "n_splits": len(per_split),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, `spread`) of runs, NaN values dropped."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), spread(vals)


def accuracy_standard_error(accuracy_pct: float, n: int) -> float:
    """Binomial standard error, in points, of an accuracy (percent) measured on `n` videos:
    100 * sqrt(p (1 - p) / n). Why: it says how many points one eval set can resolve (48 videos
    at 45%: 7.2 points; 600 videos: at most 2.04 (p = 50%), 2.0 at p <= 40% or >= 60%). NaN for n < 1."""
    if n < 1 or math.isnan(accuracy_pct):
        return float("nan")
    p = min(max(accuracy_pct / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def mean_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) over runs (splits / seeds): `spread` / sqrt(k).
    NaN values are dropped; the standard error is NaN with fewer than two runs (a single run says
    nothing about its spread; the per-eval-set binomial error is `accuracy_standard_error`)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), spread(vals) / math.sqrt(len(vals))


def within_noise(a: float, se_a: float, b: float, se_b: float, z: float = 2.0) -> bool:
    """True when |a - b| <= z * sqrt(se_a^2 + se_b^2): the difference is not resolved (about 95%
    for independent, roughly normal estimates at z=2); tables mark such differences."""
    return abs(a - b) <= z * math.sqrt(se_a ** 2 + se_b ** 2)


def run_average_standard_error(standard_errors: Sequence[float],
                               eval_sets: Sequence[Hashable] | None = None) -> float:
    """Standard error, in points, of the average of k runs' accuracies from eval-set sampling
    alone: sqrt(sum_g (sum_{i in g} se_i)^2) / k, with se_i the binomial SE of run i
    (`accuracy_standard_error`) and g the groups of runs evaluated on the same videos.

    Why grouped: runs on different eval sets (splits) sample independent videos, so their errors
    add in quadrature (sqrt(sum se_i^2) / k); runs on one eval set (seeds of one split) share its
    sampling error, which averaging over them does not reduce (their SEs add linearly first).
    `eval_sets` None: every run on its own set. NaN when any run's SE is unknown."""
    ses = [float(s) for s in standard_errors]
    if not ses or any(math.isnan(s) for s in ses):
        return float("nan")
    groups: dict[Hashable, float] = {}
    for i, se in enumerate(ses):
        key = eval_sets[i] if eval_sets is not None else i
        groups[key] = groups.get(key, 0.0) + se
    return math.sqrt(sum(g ** 2 for g in groups.values())) / len(ses)


def harmonic_mean_standard_error(base: float, se_base: float, novel: float, se_novel: float) -> float:
    """SE of HM = 2BN / (B + N) by the delta method, base and novel independent (disjoint videos):
    sqrt((dHM/dB se_B)^2 + (dHM/dN se_N)^2), dHM/dB = 2N^2 / (B + N)^2, dHM/dN = 2B^2 / (B + N)^2.
    NaN when B + N = 0 (HM is not differentiable there) or an input SE is unknown."""
    if base + novel == 0:
        return float("nan")
    d_base = 2.0 * novel ** 2 / (base + novel) ** 2
    d_novel = 2.0 * base ** 2 / (base + novel) ** 2
    return math.sqrt((d_base * se_base) ** 2 + (d_novel * se_novel) ** 2)
