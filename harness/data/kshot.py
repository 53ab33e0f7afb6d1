"""K-shot training lists sampled from a full training list, for datasets without upstream
few-shot lists (Kinetics, a folder of the user's videos).

Why a file in the cache and not a list in memory: the sampled list is a file like any other split
file, read by the same pipeline and fingerprinted (sha256, seed, K, source) into the job's
identity; sampling is deterministic (numpy PCG64 seeded with the run's seed), so the same run
writes the same file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.data.annotations import read_annotation_list, write_annotation_list
from harness.data.upstream import file_sha256
from harness.paths import cache_root


def sample_k_shot(entries: list, shots: int, seed: int) -> list:
    """K entries per class drawn deterministically (numpy PCG64 seeded with `seed`), in list order.
    Classes with fewer than K videos keep all of them."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        by_class.setdefault(entry.label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_class):
        idx = by_class[label]
        keep.extend(idx if len(idx) <= shots else sorted(rng.choice(idx, size=shots, replace=False).tolist()))
    return [entries[i] for i in sorted(keep)]


def sampled_list(source: Path, num_classes: int, dataset: str, shots: int, seed: int,
                 cache_dir: str | None) -> tuple[Path, dict[str, Any]]:
    """(path, fingerprint) of the K-shot list sampled from the training list `source`: written
    once to `<cache>/sampled/<dataset>/`, named by K, seed and the source's sha256."""
    sampled = sample_k_shot(read_annotation_list(source, num_classes), shots, seed)
    out = (cache_root(cache_dir) / "sampled" / dataset
           / f"train_few_shot_{shots}_seed{seed}_{file_sha256(source)[:10]}.txt")
    if not out.is_file():
        write_annotation_list(out, sampled)
    return out, {"sha256": file_sha256(out), "seed": seed, "shots": shots, "from": str(source.name)}
