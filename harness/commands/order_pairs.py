"""`harness bench --order-pairs`: train each method briefly on the embedded dataset and score its
order-only class pairs (`harness.measure.order_pairs` scores and summarises; this trains through
`harness.api`, so the jobs are planned and checked like any run's, data included)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.commands import print_json, write_json
from harness.errors import HarnessError


def run_order_pairs(methods: str | Sequence[str] | None, out: Path, epochs: int = 10,
                    extra_sets: Sequence[str] | None = None, progress: bool = False,
                    seeds: Sequence[int] | None = None, cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Train each method briefly on the embedded dataset (fully supervised, all classes) and
    score the order-only pairs, once per seed (default: the request's default seed); jobs done
    by an earlier call are skipped (the store keys jobs by seed). `methods`: names, 'a,b' or None
    (every method, those that model frame order first). A job that fails (its data included)
    stops the benchmark with its own error message."""
    from harness import api
    from harness.measure.order_pairs import score_run
    from methods.registry import list_methods

    names = methods if methods else list_methods(True) + list_methods(False)
    sets = [f"schedule.epochs={epochs}", *(extra_sets or [])]
    job_ids: list[str] = []
    for seed in seeds or [None]:
        req = api.request(names, "fully_supervised", sets=sets, cache_dir=cache_dir,
                          **({} if seed is None else {"seed": seed}))
        planned = api.plan(req, out)
        api.execute(planned, progress)
        failed = api.failures(planned.store, planned.jobs)
        if failed:
            first = failed[0]
            raise HarnessError(f"order-pair training of {first.get('method')} failed: {first.get('type')}: "
                               f"{first.get('message')} ({len(failed)} failed job(s); details: {out}/jobs/*/error.json)")
        job_ids += [job.job_id for job in planned.jobs]
    return score_run(Path(out), job_ids)


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 1,2,3` as distinct integers in order; a bad list is one line naming the option."""
    if text is None:
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise HarnessError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2,3")
    return list(dict.fromkeys(seeds))


def order_pairs_command(args: argparse.Namespace) -> int:
    """Per-run rows, mean ± SE over seeds and the verdicts: Markdown on stdout (`--format json`:
    the numbers as JSON instead), `--md` / `--json` files."""
    from harness.atomic import atomic_write_text
    from harness.measure.order_pairs import order_pairs_report

    rows = run_order_pairs(args.methods, Path(args.out), epochs=args.epochs, extra_sets=args.sets, progress=True,
                           seeds=parse_seeds(args.seeds), cache_dir=args.cache)
    report = order_pairs_report(rows)
    numbers = {k: v for k, v in report.items() if k != "markdown"}
    if args.format == "json":
        print_json(numbers)
    else:
        print(report["markdown"])
    if args.md_path:
        atomic_write_text(args.md_path, report["markdown"])
    if args.json_path:
        write_json(args.json_path, numbers)
    return 0
