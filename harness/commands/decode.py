"""`harness bench --data` (the training pipeline's decode + augment rate on a dataset's training
list) and `harness bench --data --synthetic KIND` (every decode path on generated videos): the
front ends of `harness.measure.data_bench` and `harness.measure.decode_bench`. Both print a table,
or with `--format json` only the rows as JSON; `--json FILE` writes the rows there too."""
from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from harness.commands import print_json, write_json
from harness.errors import HarnessError, unknown_name_error

#: Frames per clip when `--frames` is not given (the protocols' 8).
DEFAULT_FRAMES = 8


def _training_list(resolver: Any) -> tuple[str, dict[str, Any]]:
    """The dataset's most representative training list: full train, else base-to-novel split 1,
    else the 16-shot list."""
    for role, fmt in (("train", {}), ("b2n_train", {"split": 1}), ("fewshot_train", {"shots": 16})):
        if resolver.has(role):
            return role, fmt
    raise HarnessError(f"dataset {resolver.spec.name!r} has no training list to benchmark the pipeline on")


def _emit(rows: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """`--json FILE` written; True when `--format json` printed the rows (nothing else is printed)."""
    if args.json_path:
        write_json(args.json_path, rows)
    if args.format == "json":
        print_json(rows)
        return True
    return False


def data_command(args: argparse.Namespace) -> int:
    """`harness bench --data`: per-worker decode+augment rate on a dataset's training list."""
    from harness.data.annotations import read_class_csv
    from harness.data.resolver import FileResolver
    from harness.measure.data_bench import (
        DEFAULT_TARGETS,
        augment_cpu_ms,
        bench_data,
        format_augment_line,
        format_data_bench,
    )

    resolver = FileResolver(args.dataset, args.data_root, None, args.cache)
    role, fmt = _training_list(resolver)
    ann = resolver.path(role, **fmt)
    classes_role = resolver.spec.classes_role_for(role)
    class_fmt = {"split": fmt["split"]} if "{split}" in resolver.spec.files.get(classes_role, "") else {}
    num_classes = len(read_class_csv(resolver.path(classes_role, **class_fmt)))
    frames, size = args.frames or DEFAULT_FRAMES, args.image_size or 224
    rows = bench_data(ann, resolver.video_dir, num_classes, num_frames=frames, image_size=size,
                      samples=args.samples or 32, workers=[0], targets=DEFAULT_TARGETS,
                      pipeline_options={"flip": resolver.spec.flip_ok})
    augment = augment_cpu_ms(ann, resolver.video_dir, num_classes, num_frames=frames, samples=args.samples or 16,
                             image_size=size, flip=resolver.spec.flip_ok)
    for row in rows:
        row.update(dataset=args.dataset, ann_file=str(ann), augment_on_cpu_ms={**augment})
    if not _emit(rows, args):
        print(f"{args.dataset}: {ann} ({rows[0]['videos_used']} videos), training pipeline, "
              f"decoder {rows[0]['decoder']}")
        print(format_data_bench(rows), end="")
        print(format_augment_line(augment))
    return 0


def synthetic_command(args: argparse.Namespace) -> int:
    """`harness bench --data --synthetic KIND [--decoders a,b] [--samples N] [--runs N]`."""
    from harness.measure.decode_bench import PATHS, bench_synthetic, format_rows

    paths = [p.strip() for p in args.decoders.split(",") if p.strip()] if args.decoders else None
    for path in paths or []:
        if path not in PATHS:
            raise unknown_name_error("--decoders path", path, PATHS)
    rows = bench_synthetic(args.synthetic, args.cache, paths, frames=args.frames or DEFAULT_FRAMES,
                           image_size=args.image_size or 224, samples=args.samples or 24, runs=args.runs,
                           gop=args.gop, subsampling=args.subsampling)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    for row in rows:
        row["machine"] = machine
    if not _emit(rows, args):
        print(f"{args.synthetic}: {rows[0]['profile']}; {rows[0]['videos']} videos, {rows[0]['frames']} x "
              f"{rows[0]['image_size']} training clips, CPU time (median of {rows[0]['runs']} runs of "
              f"{rows[0]['samples']} clips); {machine}")
        print(format_rows(rows), end="")
        slow = [r["path"] for r in rows if not r["exact"]]
        if slow:
            print(f"inexact (returned other frames than requested; never used by data.decoder): {', '.join(slow)}")
    return 0
