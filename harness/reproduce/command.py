"""`harness reproduce SUITE` and `harness ls suites`: parsing and printing over
harness/reproduce/{suite,plan,table}.py."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def add_reproduce_parser(sub: Any) -> None:
    from harness.launch.options import add_launcher_arguments

    rep = sub.add_parser("reproduce", help="run a published table (a suite: `harness ls suites`) and compare each "
                         "cell with the published number")
    rep.add_argument("suite", help="suite name (protocols/suites/<name>.yaml) or a suite YAML file")
    rep.add_argument("--data-root", default=None, help="videos root (or env HARNESS_DATA_ROOT)")
    rep.add_argument("--splits-root", default=None, help="local copy of the upstream split files (offline)")
    rep.add_argument("--cache", default=None, help="cache dir (default $HARNESS_CACHE or ~/.cache/harness)")
    rep.add_argument("--pretrained", default=None, help="the weights file a suite asks for (e.g. ViCLIP-B-16's .pth)")
    rep.add_argument("--out", default=None, help="results folder (default results/reproduce-<suite>); one "
                     "subfolder per dataset")
    rep.add_argument("--dry-run", action="store_true", help="list the jobs with their estimated cost and what is "
                     "missing (videos, weights, split files); run nothing")
    rep.add_argument("--report-only", action="store_true", help="run nothing: build the table from the jobs "
                     "finished so far (after --launcher slurm)")
    rep.add_argument("--bench-json", default=None, help="cost from your own `harness bench --format json` output "
                     "(achieved TFLOP/s per method and mode) instead of the assumed throughput")
    rep.add_argument("--assume-tflops", type=float, default=None, help="assumed effective TFLOP/s per GPU "
                     "(default 100)")
    rep.add_argument("--no-progress", action="store_true")
    add_launcher_arguments(rep)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.launch.options import launcher_config
    from harness.reproduce.plan import plan_suite
    from harness.reproduce.suite import load_suite

    suite = load_suite(args.suite)
    launcher = None if args.dry_run or args.report_only else launcher_config(args)
    throughput = _throughput(args)
    plan = plan_suite(suite, out=Path(args.out) if args.out else None, data_root=args.data_root,
                      splits_root=args.splits_root, cache=args.cache, pretrained=args.pretrained,
                      dry_run=args.dry_run or args.report_only)
    if args.dry_run:
        print(dry_run_text(plan, throughput, args.cache))
        return 0
    code = 0
    if not args.report_only:
        code = _run(plan, args, launcher)
        if launcher is not None and not args.wait:
            print(f"build the table when the jobs finish: harness reproduce {args.suite} --report-only"
                  + (f" --out {args.out}" if args.out else ""))
            return code
    print(write_table(plan))
    return code


def _throughput(args: argparse.Namespace) -> Any:
    from harness.measure.cost import Throughput, throughput_from_bench

    if args.bench_json:
        return throughput_from_bench(args.bench_json)
    if args.assume_tflops is not None:
        if args.assume_tflops <= 0:
            raise HarnessError(f"--assume-tflops must be > 0, got {args.assume_tflops}")
        return Throughput(default=args.assume_tflops, source=f"assumed {args.assume_tflops:g} TFLOP/s per GPU "
                          "(--assume-tflops)")
    return Throughput()


def _run(plan: Any, args: argparse.Namespace, launcher: Any) -> int:
    """Run (or submit) every job of the plan through the one plan step of every front end
    (harness.api.plan: options, results folder, each job's data), one (method, dataset) at a
    time into the dataset's results folder. Exit status as `harness run`: 2 if a job's data was
    unusable, 1 if a job failed, else 0."""
    from harness import api
    from harness.launch.options import launch
    from harness.store import RunStore

    for line in plan.missing:
        if line.startswith(("cannot plan", "split files")):
            print(f"harness: warning: {line}; those cells stay `not run`", file=sys.stderr)
    code = 0
    for group in plan.groups:
        if not group.jobs:
            continue
        planned = api.plan(group.request, RunStore(group.out), jobs=group.jobs)
        if launcher is not None:
            code = max(code, launch(planned, launcher, args.wait))
            continue
        bad, failed = api.execute(planned, progress=not args.no_progress)
        code = max(code, 2 if bad else 1 if failed else 0)
    return code


def write_table(plan: Any) -> str:
    """The reproduction table as Markdown (printed) and CSV, in the suite's results folder."""
    from harness.atomic import atomic_write_text
    from harness.reports.published import PUBLISHED_FILE, load_published
    from harness.reproduce.table import build_cells, to_frame, to_markdown

    published = load_published(plan.suite.published_file or PUBLISHED_FILE)
    cells = build_cells(plan, published)
    text = to_markdown(plan, cells)
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out / "reproduction.md", text)
    atomic_write_text(plan.out / "reproduction.csv", to_frame(cells).to_csv(index=False))
    return text + f"\ntable: {plan.out / 'reproduction.md'} (CSV: {plan.out / 'reproduction.csv'})"


def dry_run_text(plan: Any, throughput: Any, cache: str | None) -> str:
    """The jobs with their estimated cost, the totals, what is missing and the cells that cannot
    be compared."""
    from harness.reports.published import PUBLISHED_FILE, load_published
    from harness.reproduce.plan import estimate
    from harness.reproduce.table import NOT_COMPARABLE, build_cells

    suite = plan.suite
    lines = [f"Suite {suite.name}: {suite.title}", f"  source: {suite.source_text()}",
             f"  protocol {suite.protocol}, schedule {suite.schedule}, backbone {suite.backbone}, tolerance "
             f"±{suite.tolerance:g} point(s); published numbers from {suite.published_file or PUBLISHED_FILE}"
             + (f" (source {suite.published_source!r})" if suite.published_source else ""),
             f"  results: {plan.out}"]
    rows = estimate(plan, throughput, cache) if plan.jobs else []
    lines.append(f"\nJobs ({len(rows)}):")
    header = ("dataset", "method", "split", "K", "frames", "views", "epochs", "train clips", "eval videos",
              "PFLOPs", "GPU-h", "job id")
    table = [header] + [(r["dataset"], r["method"], str(r["split"]), str(r["shots"] or "-"), str(r["frames"]),
                         r["views"], str(r["epochs"]), f"{r['train_clips']:,}", f"{r['eval_videos']:,}",
                         f"{r['train_pflops'] + r['eval_pflops']:.1f}", f"{r['gpu_hours']:.2f}", r["job_id"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    for group in plan.groups:
        if group.problem:
            lines.append(f"  {group.dataset:<8} {group.method}: no jobs (cannot plan: see Missing)")
    for row in rows:
        if row.get("error"):
            lines.append(f"  {row['job_id']}: cost not estimated ({row['error']})")
    train = sum(r["train_pflops"] for r in rows)
    evaluation = sum(r["eval_pflops"] for r in rows)
    hours = sum(r["gpu_hours"] for r in rows if r["gpu_hours"] == r["gpu_hours"])
    lines += ["", f"Estimated cost: {hours:.1f} GPU-hours ({train:.1f} PFLOPs training, {evaluation:.1f} PFLOPs "
                  f"evaluation) at {throughput.source}.",
              "  FLOPs counted on the model (harness/measure/flops.py); data loading and validation during training "
              "not included."]
    lines.append("\nMissing:" if plan.missing else "\nMissing: nothing")
    lines += [f"  {line}" for line in plan.missing]
    cells = build_cells(plan, load_published(suite.published_file or PUBLISHED_FILE))
    odd = [c for c in cells if c.verdict.startswith(NOT_COMPARABLE)]
    if odd:
        lines.append(f"\nCells not comparable with the published numbers ({len(odd)} of {len(cells)}):")
        lines += [f"  {c.dataset} {c.method} {c.metric}: {c.verdict[len(NOT_COMPARABLE) + 2:]}" for c in odd]
    lines += [f"\nNote: {note}" for note in plan.notes]
    return "\n".join(lines)


def format_suites() -> str:
    """`harness ls suites`: name, title, source, protocol, methods, datasets."""
    from harness.reproduce.suite import list_suites, load_suite

    lines = ["Suites (harness reproduce <name>):"]
    for name in list_suites():
        suite = load_suite(name)
        lines.append(f"  {name}: {suite.title}")
        lines.append(f"      source: {suite.source_text()}")
        lines.append(f"      {suite.protocol}; methods {', '.join(suite.methods)}; datasets {', '.join(suite.datasets)}; "
                     f"tolerance ±{suite.tolerance:g}")
    return "\n".join(lines)
