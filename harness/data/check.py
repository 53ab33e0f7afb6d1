"""`harness data check`: how many listed videos exist, how many decode, and how long decoding
takes, for every annotation list of a dataset (or one role)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from harness.errors import HarnessError

LIST_ROLES = ("b2n_train", "b2n_base_val", "b2n_novel_val", "fewshot_train", "fewshot_val", "train", "val", "zs_eval")


def _decode_seconds(path: Path) -> float:
    import decord

    start = time.perf_counter()
    reader = decord.VideoReader(str(path), num_threads=1)
    n = len(reader)
    idx = [int(i * (n - 1) / 7) for i in range(8)] if n > 1 else [0]
    reader.get_batch(idx).asnumpy()
    return time.perf_counter() - start


def check_list(ann_file: Path, video_root: Path, num_classes: int, sample: int) -> dict:
    from harness.data.annotations import read_annotation_list

    entries = read_annotation_list(ann_file, num_classes)
    present = [e for e in entries if (video_root / e.path).is_file()]
    step = max(1, len(present) // max(1, sample))
    timed, failed = [], []
    for entry in present[::step][:sample]:
        try:
            timed.append(_decode_seconds(video_root / entry.path))
        except Exception as err:  # decord raises several types for corrupt files
            failed.append(f"{entry.path} ({type(err).__name__})")
    return {"listed": len(entries), "present": len(present), "decoded": len(timed), "failed": failed,
            "median_decode_s": statistics.median(timed) if timed else None}


def check_command(dataset: str, data_root: str | None, splits_root: str | None, role: str | None, sample: int) -> int:
    from harness.jobs import FileResolver

    resolver = FileResolver(dataset, data_root, splits_root)
    roles = [role] if role else [r for r in LIST_ROLES if resolver.has(r)]
    if role and not resolver.has(role):
        raise HarnessError(f"--role {role!r}: dataset {dataset!r} has no such list (has: {', '.join(r for r in LIST_ROLES if resolver.has(r))})")
    print(f"videos under {resolver.video_dir}")
    print(f"{'list':<48} {'listed':>7} {'present':>8} {'decoded':>8} {'failed':>7} {'decode s':>9}")
    bad = 0
    for r in roles:
        fmts = [{"split": s, "shots": 16} for s in (resolver.spec.split_ids if "{split}" in resolver.spec.files[r] else [1])]
        for fmt in fmts:
            ann = resolver.path(r, **{k: v for k, v in fmt.items() if "{" + k + "}" in resolver.spec.files[r]})
            classes_role = resolver.spec.classes_role_for(r)
            if not resolver.has(classes_role):
                classes_role = "classes"
            cfmt = {"split": fmt["split"]} if "{split}" in resolver.spec.files[classes_role] else {}
            from harness.data.annotations import read_class_csv

            n_classes = len(read_class_csv(resolver.path(classes_role, **cfmt)))
            res = check_list(ann, resolver.video_dir, n_classes, sample)
            med = f"{res['median_decode_s']:.3f}" if res["median_decode_s"] is not None else "-"
            print(f"{ann.name:<48} {res['listed']:>7} {res['present']:>8} {res['decoded']:>8} {len(res['failed']):>7} {med:>9}")
            for f in res["failed"][:3]:
                print(f"    unreadable: {f}")
            bad += len(res["failed"]) + (res["listed"] - res["present"])
    return 1 if bad else 0
