"""`harness data check` and `harness data prepare`: every annotation list of a dataset (or one
role) checked video by video (exists, header-probed, a sample decoded and timed), and the one-time
JPEG frame folders that runs then read instead of the videos."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from harness.data.check import LIST_ROLES, check_list
from harness.data.resolver import FileResolver
from harness.errors import HarnessError


def dataset_lists(resolver: FileResolver) -> list[tuple[str, Path, int]]:
    """Every annotation list of the resolver's dataset: `(role, list file, number of classes)`."""
    from harness.data.annotations import read_class_csv

    spec = resolver.spec
    out = []
    for r in (r for r in LIST_ROLES if resolver.has(r)):
        fmts = [{"split": s, "shots": 16} for s in (spec.split_ids if "{split}" in spec.files[r] else [1])]
        for fmt in fmts:
            ann = resolver.path(r, **{k: v for k, v in fmt.items() if "{" + k + "}" in spec.files[r]})
            classes_role = spec.classes_role_for(r)
            if not resolver.has(classes_role):
                classes_role = "classes"
            cfmt = {"split": fmt["split"]} if "{split}" in spec.files[classes_role] else {}
            out.append((r, ann, len(read_class_csv(resolver.path(classes_role, **cfmt)))))
    return out


def check_command(dataset: str, data_root: str | None, splits_root: str | None, role: str | None, sample: int,
                  gpu_rate: float | None = None, decode_all: bool = False) -> int:
    resolver = FileResolver(dataset, data_root, splits_root)
    if role and not resolver.has(role):
        raise HarnessError(f"--role {role!r}: dataset {dataset!r} has no such list (has: {', '.join(r for r in LIST_ROLES if resolver.has(r))})")
    print(f"videos under {resolver.video_dir}")
    print(f"{'list':<48} {'listed':>7} {'present':>8} {'decoded':>8} {'failed':>7} {'decode s':>9}")
    bad = 0
    timings = []
    for r, ann, n_classes in dataset_lists(resolver):
        if role and r != role:
            continue
        res = check_list(ann, resolver.video_dir, n_classes, sample, decode_all)
        med = f"{res['median_decode_s']:.3f}" if res["median_decode_s"] is not None else "-"
        print(f"{ann.name:<48} {res['listed']:>7} {res['present']:>8} {res['decoded']:>8} {len(res['failed']):>7} {med:>9}")
        for f in res["failed"]:  # every one: a list is fixed in one pass, not one video per rerun
            print(f"    unreadable: {f}")
        bad += len(res["failed"]) + (res["listed"] - res["present"])
        if res["median_decode_s"] is not None:
            timings.append(res["median_decode_s"])
    if gpu_rate and timings:
        print(workers_report(gpu_rate, statistics.median(timings)))
    return 1 if bad else 0


def workers_report(gpu_rate: float, decode_s: float) -> str:
    """How many DataLoader workers (one core each) feed `gpu_rate` clips/s when one 8-frame decode
    takes `decode_s` (the augmentation adds a few ms; `harness bench --data` measures both)."""
    from harness.measure.data_bench import workers_needed

    per_worker = 1.0 / decode_s
    return (f"at {decode_s * 1e3:.1f} ms per 8-frame decode ({per_worker:.1f} clips/s per worker, decode only), "
            f"{gpu_rate:g} clips/s on the GPU needs {workers_needed(gpu_rate, per_worker)} DataLoader workers "
            f"(cores); `harness data prepare` then `harness bench --data` to measure the prepared path")


def prepare_command(dataset: str, data_root: str | None, splits_root: str | None, cache_dir: str | None,
                    quality: int, short_side: int, workers: int, subsampling: str = "420") -> int:
    """`harness data prepare`: JPEG frame folders for every video listed in any list of `dataset`."""
    from harness.data.annotations import read_annotation_list
    from harness.data.prepared import manifest_path, prepare_videos
    if not 1 <= quality <= 100:
        raise HarnessError(f"--quality {quality}: must be in 1..100")
    if short_side < 16:
        raise HarnessError(f"--short-side {short_side}: must be >= 16")
    resolver = FileResolver(dataset, data_root, splits_root, cache_dir)
    rels: set[str] = set()
    for _, ann, n_classes in dataset_lists(resolver):
        rels.update(e.path for e in read_annotation_list(ann, n_classes) if (resolver.video_dir / e.path).is_file())
    if not rels:
        raise HarnessError(f"no listed video of {dataset!r} exists under {resolver.video_dir}")
    start = time.perf_counter()
    manifest = prepare_videos(resolver.video_dir, sorted(rels), quality=quality, short_side=short_side,
                              workers=workers, progress=True, subsampling=subsampling)
    total = sum(manifest["videos"][r]["bytes"] for r in rels)
    print(f"{len(rels)} videos prepared in {manifest_path(resolver.video_dir).parent} "
          f"({total / 1e9:.2f} GB, {total / len(rels) / 1e6:.2f} MB per video, {time.perf_counter() - start:.0f} s); "
          f"runs with data.decoder=auto (the default) now read them")
    return 0
