"""`harness` command line. Heavy imports (torch, open_clip, mmengine) happen inside the command
that needs them, so `harness ls` and `--help` are instant and errors are shown as one line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.defaults import DEFAULT_SEED, EMBEDDED_BACKBONE, REAL_BACKBONE, SYNTHETIC_BACKBONES
from harness.errors import HarnessError


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HarnessError(f"{option} {text!r}: expected comma-separated integers, e.g. 1,2,3") from None


def _shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise HarnessError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise HarnessError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def add_data_locations(parser: argparse.ArgumentParser) -> None:
    """--data-root, --splits-root, --cache: where a job's videos, split files and cache are."""
    parser.add_argument("--data-root", default=None, help="videos root (or env HARNESS_DATA_ROOT)")
    parser.add_argument("--splits-root", default=None, help="local copy of the upstream split files (offline)")
    parser.add_argument("--cache", default=None, help="cache dir (default $HARNESS_CACHE or ~/.cache/harness)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("HARNESS_DEBUG")),
                        help="show the Python traceback of an error (also: HARNESS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run methods under a protocol and print the comparison table")
    run.add_argument("--methods", required=True, help="comma-separated method names, or 'all'")
    run.add_argument("--protocol", required=True, help="base2novel | few_shot | zero_shot | fully_supervised")
    run.add_argument("--dataset", default="embedded", help="embedded (generated, default) | hmdb51 | ucf101 | k400 | k600 | ssv2")
    run.add_argument("--backbone", default=None, help=f"open_clip model name (default {EMBEDDED_BACKBONE} on the "
                     f"embedded dataset, else {REAL_BACKBONE})")
    run.add_argument("--pretrained", default=None, help="open_clip tag (e.g. openai), a local checkpoint path, "
                     "'synthetic' (harness-tiny pretrained by the project; the default on the embedded dataset) "
                     "or 'random'")
    run.add_argument("--frames", type=int, default=None, help="frames per clip (overrides the schedule)")
    run.add_argument("--splits", default=None, help="upstream split indices, e.g. 1,2,3")
    run.add_argument("--shots", default=None, help="few_shot: K values, e.g. 2,4,8,16")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed (independent of the split index)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="<method>.<option>=v, schedule.<key>=v or data.<key>=v (repeatable)")
    run.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=V1,V2,...",
                     help="ablation: run every value (same grammar as --set; repeatable = grid); "
                          "the report plots the metric against it")
    run.add_argument("--profile", default=None, help="named short schedule (embedded | tiny | short); "
                     "default: embedded on the embedded dataset, none elsewhere")
    run.add_argument("--schedule", default="shared", choices=("shared", "paper"),
                     help="shared: one schedule for all methods; paper: each method's published schedule")
    run.add_argument("--out", default=None, help="results directory (default results/<protocol>-<dataset>[-<profile>])")
    add_data_locations(run)
    run.add_argument("--shard", default=None, help="i/n: run only every n-th job starting at i (SLURM arrays)")
    run.add_argument("--dry-run", action="store_true", help="print the jobs and their resolved configs, then exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    ls = sub.add_parser("ls", help="list methods (with options), protocols, datasets, profiles and settings")
    ls.add_argument("what", nargs="?", default="all",
                    choices=("all", "methods", "protocols", "datasets", "profiles", "settings", "recipes", "backbones"))
    ls.add_argument("--method", default=None, help="ls recipes: only this method")
    ls.add_argument("--protocol", default=None, help="ls recipes: only this protocol")

    params = sub.add_parser("params", help="trainable / total parameters (and GFLOPs) per method")
    params.add_argument("--methods", default="all")
    params.add_argument("--backbone", default=REAL_BACKBONE)
    params.add_argument("--pretrained", default=None)
    params.add_argument("--frames", type=int, default=8)
    params.add_argument("--classes", type=int, default=400, help="number of classes (per-class parameters)")
    params.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE")
    params.add_argument("--flops", action="store_true", help="also count GFLOPs per view (slower)")
    params.add_argument("--format", default="table", choices=("table", "json"))

    from harness.measure.bench_cli import add_bench_arguments

    bench = sub.add_parser("bench", help="training/inference throughput, MFU and memory (or --data: decoding)")
    add_bench_arguments(bench)
    bench.add_argument("--data", action="store_true", help="measure the MMAction2 decode+augment pipeline instead")
    bench.add_argument("--order-pairs", action="store_true", help="train briefly on the embedded dataset and report "
                       "accuracy on its order-only class pairs (do methods see frame order?)")
    bench.add_argument("--epochs", type=int, default=30,
                       help="--order-pairs: training epochs (30: the embedded benchmark's order-pair budget; "
                       "its lr search used 10)")
    bench.add_argument("--out", default="results/order-pairs", help="--order-pairs: results directory")
    bench.add_argument("--seeds", default=None, help="--order-pairs: comma-separated seeds, e.g. 1,2,3 (each method "
                       "trained once per seed; mean ± SE over seeds and the temporal vs order-blind verdict; default: "
                       "the run's default seed)")
    bench.add_argument("--dataset", default="embedded", help="--data: the dataset whose training list is decoded")
    bench.add_argument("--data-root", default=None, help="--data: folder holding <dataset>/videos/")
    bench.add_argument("--synthetic", default=None, choices=("kinetics-like", "ssv2-like"),
                       help="--data: every decode path on generated videos shaped like that dataset (cached), "
                       "checked for exact frames, CPU time per clip")
    bench.add_argument("--decoders", default=None, help="--synthetic: comma list of paths (default: all available)")
    bench.add_argument("--samples", type=int, default=None, help="--data: clips per timed run")
    bench.add_argument("--runs", type=int, default=5, help="--synthetic: timed runs (the median is reported)")
    bench.add_argument("--subsampling", default="420", choices=("420", "444"),
                       help="--synthetic: JPEG chroma subsampling of the prepared frames")
    bench.add_argument("--gop", type=int, default=None, help="--synthetic: keyframe interval of the generated videos")
    bench.add_argument("--cache", default=None, help="cache dir (default $HARNESS_CACHE or ~/.cache/harness)")

    data = sub.add_parser("data", help="check videos on disk / fetch the pinned upstream split files")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="how many listed videos exist, are readable, and decode time")
    check.add_argument("--dataset", required=True)
    check.add_argument("--data-root", default=None)
    check.add_argument("--splits-root", default=None)
    check.add_argument("--role", default=None, help="list role to check (default: every list of the dataset)")
    check.add_argument("--sample", type=int, default=20, help="decode this many videos per list for timing")
    check.add_argument("--all", dest="decode_all", action="store_true",
                       help="decode every listed video, not only --sample per list (every video is header-probed)")
    check.add_argument("--gpu-rate", type=float, default=None,
                       help="clips/s the GPU trains at: print how many DataLoader workers that needs")
    prep = dsub.add_parser("prepare", help="one-time conversion of a dataset's videos to per-video JPEG frame "
                           "folders that runs read instead (exact, ~8x cheaper per clip); see docs/performance.md")
    prep.add_argument("--dataset", required=True)
    prep.add_argument("--data-root", default=None)
    prep.add_argument("--splits-root", default=None)
    prep.add_argument("--cache", default=None)
    prep.add_argument("--quality", type=int, default=95, help="JPEG quality")
    prep.add_argument("--short-side", type=int, default=256, help="frames larger than this are resized to it "
                      "(the training pipeline's resize target for 224 px)")
    prep.add_argument("--subsampling", default="420", choices=("420", "444"), help="JPEG chroma subsampling "
                      "(444: closer to the video's pixels, ~1.7x the disk, slower to decode)")
    prep.add_argument("--workers", type=int, default=1, help="processes")
    fetch = dsub.add_parser("fetch", help="download + verify the split/label/description files (or copy from --splits-root)")
    fetch.add_argument("--splits-root", default=None)
    fetch.add_argument("--cache", default=None)
    fetch.add_argument("--only", action="append", default=None, help="path, folder prefix or glob (repeatable)")

    ssv2 = dsub.add_parser("build-ssv2", help="SSv2 training list from the official JSON annotations")
    ssv2.add_argument("--annotations", required=True, help="folder with something-something-v2-train.json")
    ssv2.add_argument("--data-root", default=None)
    ssv2.add_argument("--splits-root", default=None)
    describe = dsub.add_parser("describe", help="write N spatial + N temporal LLM descriptions per class "
                               "(OpenAI-compatible endpoint from HARNESS_LLM_URL / _MODEL / _KEY)")
    describe.add_argument("--classes", required=True, help="class CSV (id,name)")
    describe.add_argument("--out", required=True, help="output folder (ETL4Video file format)")
    describe.add_argument("--dataset-key", required=True, help="name used in the output file names")
    describe.add_argument("--n", type=int, default=2)
    describe.add_argument("--dry-run", action="store_true", help="print the prompts, write nothing")

    report = sub.add_parser("report", help="the papers' tables (Markdown, CSV, LaTeX) and plots of any set of "
                            "results directories")
    report.add_argument("run_dirs", nargs="+", metavar="RESULTS_DIR")
    report.add_argument("--format", default="all", help="md | csv | latex (comma-separated) | all")
    report.add_argument("--out", default=None, help="output folder (default: <RESULTS_DIR>/report for one folder, "
                        "results/report-<hash of the inputs> for several)")
    report.add_argument("--with-published", action="store_true",
                        help="add the published numbers as quoted rows (never bolded, never averaged)")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    status = sub.add_parser("status", help="each job of a results directory: done / running / failed / pending")
    status.add_argument("run_dir", metavar="RESULTS_DIR")
    add_checkpoint_commands(sub)
    return parser


def add_checkpoint_commands(sub: Any) -> None:
    """`convert` (official releases -> this project's checkpoints), `eval` (a checkpoint under a
    protocol, no training) and `predict` (videos -> classes)."""
    convert = sub.add_parser("convert", help="convert an official released checkpoint into one this project loads")
    convert.add_argument("checkpoint", help="the released checkpoint file")
    convert.add_argument("--from", dest="source", required=True,
                         help="official code base: st_adapter | aim | vitaclip | vificlip | vificlip_prompt | xclip")
    convert.add_argument("--out", default=None, help="output file (default <checkpoint>.harness.pt beside it)")
    convert.add_argument("--base", default=None, help="the CLIP the release was trained from: open_clip tag "
                         "(e.g. openai) or local file; fills weights the release lacks and verifies its frozen ones")
    convert.add_argument("--backbone", default=REAL_BACKBONE, help=f"open_clip model name (default {REAL_BACKBONE})")
    convert.add_argument("--frames", type=int, default=None, help="frames the model is built for (default: the release's)")
    convert.add_argument("--classes", default=None, help="training classes in order: 'a,b,c', an id,name CSV or a "
                         ".txt with one name per line (default for 400-row heads: Kinetics-400)")
    convert.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE")
    convert.add_argument("--activation", default="quickgelu", choices=("quickgelu", "gelu"),
                         help="MLP activation of the release's CLIP (default quickgelu: the official code bases run "
                              "OpenAI CLIP; gelu builds exact GELU, outputs then differ from the official model's)")
    convert.add_argument("--allow-base-mismatch", action="store_true",
                         help="convert although the release's frozen weights differ from --base beyond fp16 rounding")
    convert.add_argument("--splits-root", default=None, help="local copy of the upstream files (K400 class list)")
    convert.add_argument("--cache", default=None)

    ev = sub.add_parser("eval", help="evaluate a checkpoint under a protocol (no training); writes a run's results")
    ev.add_argument("--checkpoint", required=True, help="a converted checkpoint (harness convert) or a run's "
                    "(results/<run>/jobs/<id>/work/*.pth)")
    ev.add_argument("--method", default=None, help="expected method (default: the checkpoint's; another is an error)")
    ev.add_argument("--protocol", required=True, help="base2novel | few_shot | zero_shot | fully_supervised")
    ev.add_argument("--dataset", default="embedded", help="as `harness run --dataset`")
    ev.add_argument("--backbone", default=None, help="expected backbone (default: the checkpoint's; another is an error)")
    ev.add_argument("--pretrained", "--base", dest="pretrained", default=None,
                    help="where the checkpoint's backbone weights are now, if they moved (identity still checked)")
    ev.add_argument("--splits", default=None, help="upstream split indices, e.g. 1,2,3")
    ev.add_argument("--shots", default=None, help="few_shot: K values")
    ev.add_argument("--seed", type=int, default=None, help="job seed (default: the run's seed for a run checkpoint)")
    ev.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="schedule.<key>=v or data.<key>=v (e.g. schedule.views=[4,3]); method options come "
                    "from the checkpoint")
    ev.add_argument("--profile", default=None, help="named profile (its views, splits, batch); default as `run`")
    ev.add_argument("--out", default=None, help="results directory (default results/eval-<protocol>-<dataset>[-<profile>])")
    add_data_locations(ev)
    ev.add_argument("--dry-run", action="store_true", help="print the jobs and their resolved configs, then exit")
    ev.add_argument("--no-progress", action="store_true")

    predict = sub.add_parser("predict", help="top-k classes with scores for video files")
    predict.add_argument("videos", nargs="+", help="video files")
    predict.add_argument("--method", default=None, help="method (default: the checkpoint's; zeroshot without one)")
    predict.add_argument("--checkpoint", default=None, help="a converted checkpoint or a run checkpoint")
    predict.add_argument("--classes", default=None, help="'a,b,c', an id,name CSV or a .txt with one name per line "
                         "(default: the checkpoint's classes)")
    predict.add_argument("--top", type=int, default=5, help="classes shown per video (at least 1)")
    predict.add_argument("--base", default=None, help="base backbone location if it moved (converted checkpoints)")
    predict.add_argument("--backbone", default=None, help=f"without --checkpoint (default {EMBEDDED_BACKBONE})")
    predict.add_argument("--pretrained", default=None, help="without --checkpoint (default: synthetic for harness-tiny)")
    predict.add_argument("--frames", type=int, default=None, help="frames sampled per video (default: the model's)")
    predict.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE")
    predict.add_argument("--cache", default=None)
    predict.add_argument("--format", default="table", choices=("table", "json"))


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything (all problems listed together), then run; see harness.validate."""
    from harness.jobs import RunRequest, default_profile
    from harness.settings import parse_set_args
    from harness.validate import (
        Problems,
        check_method_names,
        check_positive,
        check_pretrained_file,
        check_results_dir,
    )
    from methods.registry import parse_method_list

    problems = Problems()
    check_method_names(problems, args.methods)
    check_positive(problems, {"--frames": args.frames})
    methods = problems.attempt(lambda: parse_method_list(args.methods)) or []
    for item in args.sets:  # each --set on its own, so every typo is listed
        problems.attempt(lambda item=item: parse_set_args([item], methods))
    problems.attempt(lambda: check_pretrained_file(args.pretrained))
    if problems.lines:  # list the other option problems found without expanding jobs too
        problems.attempt(lambda: sweep_grid(args.sweeps))
        if args.out:
            problems.attempt(lambda: check_results_dir(Path(args.out), create=False))
    problems.raise_if_any()
    method_opts, schedule, data = parse_set_args(args.sets, methods)
    from harness.data.datasets import get_dataset

    spec = get_dataset(args.dataset)
    backbone = args.backbone or (EMBEDDED_BACKBONE if spec.generated else REAL_BACKBONE)
    pretrained = args.pretrained
    if pretrained is None and backbone in SYNTHETIC_BACKBONES:
        pretrained = "synthetic"
    if pretrained == "random":
        pretrained = None
    profile = args.profile or default_profile(args.dataset)
    from harness.validate import check_backbone_name

    problems.attempt(lambda: check_backbone_name(backbone, pretrained))
    if not problems.lines:  # the first line of the output: which activation local weights run with
        from harness.backbone import local_weights_note

        note = local_weights_note(backbone, pretrained)
        if note:
            print(f"harness: note: {note}", file=sys.stderr)
    req = RunRequest(methods=methods, protocol=args.protocol, dataset=args.dataset, backbone=backbone,
                     pretrained=pretrained, splits=_int_list(args.splits, "--splits") if args.splits else None,
                     seed=args.seed, method_options=method_opts, schedule_overrides=schedule, data_overrides=data,
                     profile=profile, schedule_kind=args.schedule, data_root=args.data_root,
                     splits_root=args.splits_root, cache_dir=args.cache, frames=args.frames,
                     shots=_int_list(args.shots, "--shots") if args.shots else None)
    from harness.store import RunStore, default_run_dir

    run_dir = Path(args.out) if args.out else default_run_dir(Path("results"), args.protocol, args.dataset, profile)
    jobs = _expand_all(req, args, methods, problems, run_dir)
    if args.dry_run:
        return _print_dry_run(jobs)
    store = RunStore(run_dir)
    from harness.validate import fail_jobs_with_bad_data

    bad = fail_jobs_with_bad_data(jobs, store, args.cache, write=_rank() == 0)
    code = run_jobs([j for j in jobs if j not in bad], store, req, progress=not args.no_progress)
    return 2 if bad and code in (0, 1) else code


def _expand_all(req: Any, args: argparse.Namespace, methods: list[str], problems: Any, run_dir: Path) -> list:
    """Every job of every sweep value, checked; every problem of the invocation raised together."""
    from harness import api
    from harness.validate import check_jobs, check_results_dir

    jobs: list = []
    for extra in problems.attempt(lambda: sweep_grid(args.sweeps)) or []:  # each grid point: its own problems
        jobs.extend(problems.attempt(lambda extra=extra: api.sweep_jobs(req, [args.sets + extra])) or [])
    index, count = problems.attempt(lambda: _shard(args.shard)) or (0, 1)
    jobs = jobs[index::count]
    check_jobs(jobs, problems)
    problems.attempt(lambda: check_results_dir(run_dir, "--out" if args.out else "results folder",
                                               create=not args.dry_run))
    problems.raise_if_any()
    return jobs


def sweep_grid(sweeps: list[str]) -> list[list[str]]:
    """`--sweep a.b=1,2 --sweep c.d=x,y` -> [["a.b=1","c.d=x"], ["a.b=1","c.d=y"], ...] (as --set items)."""
    import itertools

    axes = []
    for item in sweeps:
        if "=" not in item:
            raise HarnessError(f"--sweep {item!r}: expected KEY=V1,V2,... e.g. msta.rank=64,128,256")
        key, values = item.split("=", 1)
        if values.startswith("[") or not values:
            raise HarnessError(f"--sweep {item!r}: give comma-separated scalar values")
        axes.append([f"{key}={v.strip()}" for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _print_dry_run(jobs: list) -> int:
    import json

    for job in jobs:
        print(f"# job {job.job_id}")
        print(json.dumps(job.to_dict(), indent=2, sort_keys=True, default=str))
    print(f"{len(jobs)} job(s)")
    return 0


def run_jobs(jobs: list, store: Any, req: Any, progress: bool = True) -> int:
    """Run the jobs (harness.api.run_jobs) and print the run's summary table; exit status 1 if
    any job failed (each failure is in its error.json), 0 otherwise."""
    from harness import api

    failed = api.run_jobs(jobs, store, req, progress)
    if _rank() == 0:
        print((store.root / "summary.md").read_text())
        print(f"results: {store.root} (table: {store.root / 'summary.md'})")
    return 1 if failed else 0


def cmd_ls(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("all", "methods"):
        from methods.registry import get_method, list_methods

        print("Methods (options: default — help):")
        for name in list_methods():
            info = get_method(name)
            print(f"  {name}: {info.summary}")
            for opt, default, text in info.config_cls.options_help():
                print(f"      {name}.{opt} = {default!r} — {text}")
    if what in ("all", "protocols"):
        from protocols import list_protocols, load_protocol

        print("Protocols:")
        for name in list_protocols():
            p = load_protocol(name)
            print(f"  {name} (v{p['version']}): datasets {', '.join(p['datasets'])}; splits {p['splits']}")
    if what in ("all", "datasets"):
        from harness.data.datasets import DATASETS

        print("Datasets:")
        for name, spec in DATASETS.items():
            print(f"  {name}: {spec.title} (roles: {', '.join(sorted(spec.files))})")
        print("  folder:/path: your videos, one sub-folder per class (fully_supervised, few_shot; docs/checkpoints.md)")
    if what in ("all", "profiles"):
        from protocols import load_profiles

        print("Profiles:")
        for name, prof in load_profiles().items():
            print(f"  {name}: {prof.get('description', '')} {prof.get('schedule', {})}")
    if what in ("all", "settings"):
        from harness.settings import settings_help

        print("Settings (--set key=value):")
        for key, default, text in settings_help():
            print(f"  {key} = {default!r} — {text}")
    if what in ("all", "backbones"):
        _ls_backbones()
    if what == "recipes":
        _ls_recipes(args.method, args.protocol)
    return 0


def _ls_backbones() -> None:
    from harness.backbone import NORMALIZATIONS, backbone_rows

    print("Backbones (--backbone; token layout, input normalisation mean/std, text context in tokens):")
    for row in backbone_rows():
        mean, std = NORMALIZATIONS[row["normalization"]]
        frames = f", temporal embedding for {row['frames']} frames" if "frames" in row else ""
        print(f"  {row['name']}: {row['token_layout']} layout, {row['normalization']} normalisation (mean {mean}, "
              f"std {std}), text context {row['context_length']}, {row['image_size']} px{frames}; weights: {row['weights']}")
    print("  (any other open_clip model name: per_frame, openai normalisation)")


def _ls_recipes(method: str | None, protocol: str | None) -> None:
    from harness.recipes import format_recipes, recipe_rows
    from methods.registry import get_method, list_methods
    from protocols import list_protocols, load_protocol

    if method:
        get_method(method)  # unknown name -> one-line error with suggestions
    if protocol:
        load_protocol(protocol)
    print(format_recipes(recipe_rows([method] if method else list_methods(), [protocol] if protocol else list_protocols())))


def cmd_params(args: argparse.Namespace) -> int:
    from harness import api
    from harness.measure.params import format_params_table

    _check_counts({"--frames": args.frames, "--classes": args.classes})
    rows = api.params(args.methods, args.backbone, args.pretrained, args.frames, args.classes, args.sets, flops=args.flops)
    print(format_params_table(rows, args.format))
    return 0


def _check_counts(values: dict[str, Any], at_least_zero: dict[str, Any] | None = None) -> None:
    """Counts given on the command line: every bad one listed (one line each), before any work."""
    from harness.validate import Problems, check_positive

    problems = Problems()
    check_positive(problems, values)
    check_positive(problems, at_least_zero or {}, minimum=0)
    problems.raise_if_any()


def _parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 1,2,3` as distinct integers in order; a bad list is one line naming the option."""
    if text is None:
        return None
    seeds = _int_list(text, "--seeds")
    if not seeds:
        raise HarnessError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2,3")
    return list(dict.fromkeys(seeds))


def _bench_order_pairs(args: argparse.Namespace) -> int:
    """`harness bench --order-pairs`: per-run rows, mean ± SE over seeds, the verdicts (stdout,
    --md; --json also keeps the numbers)."""
    from harness.atomic import atomic_write_json, atomic_write_text
    from harness.measure.order_pairs import order_pairs_report, run_order_pairs

    seeds = _parse_seeds(args.seeds)
    rows = run_order_pairs(args.methods, Path(args.out), epochs=args.epochs, extra_sets=args.sets, progress=True,
                           seeds=seeds)
    report = order_pairs_report(rows)
    print(report["markdown"])
    if args.md_path:
        atomic_write_text(args.md_path, report["markdown"])
    if args.json_path:
        import json

        numbers = {k: v for k, v in report.items() if k != "markdown"}
        # strict JSON: an SE that is not defined (one seed) is null, not NaN
        atomic_write_json(args.json_path, json.loads(json.dumps(numbers), parse_constant=lambda _: None),
                          sort_keys=False)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _check_counts({"--batch": args.batch, "--frames": args.frames, "--iters": args.iters, "--epochs": args.epochs,
                   "--samples": args.samples, "--runs": args.runs, "--gop": args.gop, "--image-size": args.image_size,
                   "--num-classes": args.num_classes}, {"--warmup": args.warmup})
    if args.seeds is not None and not args.order_pairs:
        raise HarnessError("--seeds: only with --order-pairs (the other benches train nothing)")
    if args.data and args.synthetic:
        from harness.measure.decode_bench import bench_synthetic_command

        return bench_synthetic_command(args)
    if args.data:
        from harness.measure.data_bench import bench_data_command

        return bench_data_command(args)
    if args.order_pairs:
        return _bench_order_pairs(args)
    from harness.measure.bench_cli import run_bench_command

    return run_bench_command(args)


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from harness.data.upstream import fetch_command

        return fetch_command(args.splits_root, args.cache, args.only)
    if args.data_command == "prepare":
        from harness.data.check import prepare_command

        return prepare_command(args.dataset, args.data_root, args.splits_root, args.cache, args.quality,
                               args.short_side, args.workers, args.subsampling)
    if args.data_command == "build-ssv2":
        return _build_ssv2(args)
    if args.data_command == "describe":
        from harness.data.annotations import read_class_csv
        from harness.describe import write_descriptions

        written = write_descriptions(read_class_csv(args.classes), args.out, args.dataset_key, n=args.n,
                                     dry_run=args.dry_run)
        for path in (written or {}).values():
            print(path)
        return 0
    from harness.data.check import check_command

    return check_command(args.dataset, args.data_root, args.splits_root, args.role, args.sample, args.gpu_rate,
                         args.decode_all)


def _build_ssv2(args: argparse.Namespace) -> int:
    from harness.data.datasets import resolve_data_root
    from harness.data.ssv2 import build_ssv2_list
    from harness.data.upstream import UpstreamStore

    source = Path(args.annotations) / "something-something-v2-train.json"
    if not source.is_file():
        raise HarnessError(f"{source} not found: --annotations must be the folder of the official SSv2 JSON files")
    labels = UpstreamStore(splits_root=Path(args.splits_root) if args.splits_root else None).path(
        "vifi-clip/labels/ssv2_labels.csv")
    out = resolve_data_root(args.data_root) / "ssv2" / "train.txt"
    count = build_ssv2_list(source, labels, out)
    print(f"{out}: {count} videos")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_summary
    from harness.reports.build import default_out, parse_formats, write_report
    from harness.store import RunStore
    from harness.validate import check_results_dir

    folders = [Path(d) for d in args.run_dirs]
    formats = parse_formats(args.format)
    for folder in folders:
        check_results_dir(folder, "harness report", create=False)
        if not (folder / "jobs").is_dir():
            raise HarnessError(f"{folder}: not a results directory (no jobs/ folder)")
    if len(folders) == 1:  # the run's own summary, as `harness run` writes it
        store = RunStore(folders[0])
        text, path = write_summary(store.root, store.finished_records(), store.failed_records())
        print(text)
        print(f"table: {path}\n")
    out = Path(args.out) if args.out else default_out(folders)
    report = write_report(folders, out, formats, with_published=args.with_published, draw=not args.no_plots)
    print(report.markdown)
    print(f"report: {out} ({len(report.written)} files)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.reports.status import folder_status, format_status

    print(format_status(*folder_status(Path(args.run_dir))))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from harness.convert.cli import convert_command

    return convert_command(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from harness import api
    from harness.store import RunStore

    ev = api.EvalRequest(checkpoint=args.checkpoint, protocol=args.protocol, dataset=args.dataset, method=args.method,
                         backbone=args.backbone, pretrained=args.pretrained,
                         splits=_int_list(args.splits, "--splits") if args.splits else None,
                         shots=_int_list(args.shots, "--shots") if args.shots else None, seed=args.seed,
                         sets=args.sets, profile=args.profile, out=args.out, data_root=args.data_root,
                         splits_root=args.splits_root, cache=args.cache)
    jobs, req, run_dir = api.evaluation_jobs(ev)
    if args.dry_run:
        return _print_dry_run(jobs)
    return run_jobs(jobs, RunStore(run_dir), req, progress=not args.no_progress)


def cmd_predict(args: argparse.Namespace) -> int:
    from harness.convert.predict import predict_command

    return predict_command(args)


COMMANDS = {"run": cmd_run, "ls": cmd_ls, "params": cmd_params, "bench": cmd_bench, "data": cmd_data,
            "report": cmd_report, "status": cmd_status, "convert": cmd_convert, "predict": cmd_predict,
            "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as err:
        if args.debug:
            import traceback

            traceback.print_exc()
        for line in str(err).splitlines() or [type(err).__name__]:  # several problems: one line each
            print(f"harness: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted (finished jobs are kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
