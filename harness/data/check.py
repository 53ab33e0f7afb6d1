"""What `harness data check` measures for one annotation list: how many listed videos exist, how
many are readable (every one header-probed) and decode, and how long decoding takes (the command
itself, over every list of a dataset, is `harness.commands.data`)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from harness.data.annotations import read_annotation_list
from harness.data.probe import ProbeCache

LIST_ROLES = ("b2n_train", "b2n_base_val", "b2n_novel_val", "fewshot_train", "fewshot_val", "train", "val", "zs_eval")


def _decode_seconds(path: Path) -> float:
    import decord

    start = time.perf_counter()
    reader = decord.VideoReader(str(path), num_threads=1)
    n = len(reader)
    idx = [int(i * (n - 1) / 7) for i in range(8)] if n > 1 else [0]
    reader.get_batch(idx).asnumpy()
    return time.perf_counter() - start


def check_list(ann_file: Path, video_root: Path, num_classes: int, sample: int, decode_all: bool = False,
               cache_dir: str | None = None) -> dict:
    """Every present video of the list is header-probed (cheap, cached; harness.data.probe) and
    `sample` of them (every one with `decode_all`) decoded; `failed` names EVERY video found bad."""
    entries = read_annotation_list(ann_file, num_classes)
    present = [e for e in entries if (video_root / e.path).is_file()]
    probes = ProbeCache(cache_dir)
    failed: dict[str, str] = {}
    for entry in present:
        if why := probes.check(video_root / entry.path):
            failed[entry.path] = f"{entry.path} (line {entry.line}): {why}"
    probes.save()
    step = 1 if decode_all else max(1, len(present) // max(1, sample))
    chosen = present[::step] if decode_all else present[::step][:sample]
    timed = []
    for entry in chosen:
        if entry.path in failed:
            continue
        try:
            timed.append(_decode_seconds(video_root / entry.path))
        except Exception as err:  # decord raises several types for corrupt files
            failed[entry.path] = f"{entry.path} (line {entry.line}): cannot decode ({type(err).__name__})"
    return {"listed": len(entries), "present": len(present), "decoded": len(timed), "failed": list(failed.values()),
            "median_decode_s": statistics.median(timed) if timed else None}
