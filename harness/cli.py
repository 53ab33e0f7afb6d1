"""`harness` command line. Heavy imports (torch, open_clip, mmengine) happen inside the command
that needs them, so `harness ls` and `--help` are instant and errors are shown as one line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.defaults import DEFAULT_SEED, EMBEDDED_BACKBONE, REAL_BACKBONE
from harness.errors import HarnessError
from harness.launch.options import add_launcher_arguments, launch, launcher_config


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
    add_launcher_arguments(run)

    ls = sub.add_parser("ls", help="list methods (with options), protocols, datasets, profiles and settings")
    ls.add_argument("what", nargs="?", default="all",
                    choices=("all", "methods", "protocols", "datasets", "profiles", "settings", "recipes", "suites", "backbones"))
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

    from harness.commands.bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="training/inference throughput, MFU and memory (or --data: decoding; "
                           "--order-pairs: frame-order sensitivity)")
    add_bench_arguments(bench)

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
    from harness.reproduce.command import add_reproduce_parser

    add_reproduce_parser(sub)
    return parser


def add_checkpoint_commands(sub: Any) -> None:
    """`convert` (official releases -> this project's checkpoints), `eval` (a checkpoint under a
    protocol, no training) and `predict` (videos -> classes)."""
    convert = sub.add_parser("convert", help="convert an official released checkpoint into one this project loads")
    convert.add_argument("checkpoint", help="the released checkpoint file")
    convert.add_argument("--from", dest="source", required=True,
                         help="official code base: st_adapter | aim | vitaclip | vificlip | vificlip_prompt | xclip | mote | ost")
    convert.add_argument("--out", default=None, help="output file (default <checkpoint>.harness.pt beside it)")
    convert.add_argument("--base", default=None, help="the CLIP the release was trained from: open_clip tag "
                         "(e.g. openai) or local file; fills weights the release lacks and verifies its frozen ones")
    convert.add_argument("--backbone", default=REAL_BACKBONE, help=f"open_clip model name (default {REAL_BACKBONE})")
    convert.add_argument("--frames", type=int, default=None, help="frames the model is built for (default: the release's)")
    convert.add_argument("--classes", default=None, help="training classes in order: 'a,b,c', an id,name CSV or a "
                         ".txt with one name per line (default: the release's DATA.LABEL_LIST for ViFi-CLIP / "
                         "X-CLIP; Kinetics-400 for 400-row heads)")
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
    add_launcher_arguments(ev)

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
    """Plan (harness.api.plan: every problem of the invocation listed together), then run."""
    from harness import api

    launcher = launcher_config(args)  # --launcher slurm: its options, and submitit, checked first
    planned = _planned(args, lambda a: api.plan(_run_request(a), a.out, sweeps=a.sweeps, shard=_shard(a.shard),
                                                dry_run=a.dry_run))
    if _rank() == 0:  # the first line of the output: which activation local weights run with
        from harness.backbone import local_weights_note

        note = local_weights_note(planned.request.backbone, planned.request.pretrained)
        if note:
            print(f"harness: note: {note}", file=sys.stderr)
    if planned.empty_shard:
        index, count = planned.shard
        print(f"harness: shard {index}/{count} is empty: the invocation has {planned.expanded} job(s), so only "
              f"shards 0..{planned.expanded - 1} of {count} run any; nothing to do", file=sys.stderr)
        return 0
    return _dispatch(planned, args, launcher)


def _dispatch(planned: Any, args: argparse.Namespace, launcher: Any) -> int:
    """What `run` and `eval` do with a plan: print it (`--dry-run`), submit it (`--launcher`), or
    run it here and print the table."""
    if args.dry_run:
        return _print_dry_run(planned.jobs)
    if launcher is not None:
        return launch(planned, launcher, args.wait)
    return _execute(planned, progress=not args.no_progress)


def _run_request(args: argparse.Namespace) -> Any:
    from harness import api

    return api.request(args.methods, args.protocol, dataset=args.dataset, backbone=args.backbone,
                       pretrained=args.pretrained, sets=args.sets, profile=args.profile, seed=args.seed,
                       splits=_int_list(args.splits, "--splits") if args.splits else None,
                       shots=_int_list(args.shots, "--shots") if args.shots else None, frames=args.frames,
                       schedule_kind=args.schedule, data_root=args.data_root, splits_root=args.splits_root,
                       cache_dir=args.cache)


def _planned(args: argparse.Namespace, make_plan: Any) -> Any:
    """`make_plan(args)`, with the problems of options only the command line has (`--splits one`,
    `--shard x`) listed beside the plan's own (InvalidInvocation: one line each)."""
    from harness.validate import InvalidInvocation, Problems

    cli = Problems()
    for option in ("splits", "shots"):
        text = getattr(args, option, None)
        if text:
            cli.attempt(lambda text=text, option=option: _int_list(text, f"--{option}"))
    if getattr(args, "shard", None):
        cli.attempt(lambda: _shard(args.shard))
    if cli.lines:  # the plan with those options left out, for its other problems
        args = argparse.Namespace(**{**vars(args), "splits": None, "shots": None, "shard": None})
    try:
        planned = make_plan(args)
    except InvalidInvocation as err:
        raise InvalidInvocation(cli.lines + err.problems) from None
    cli.raise_if_any()
    return planned


def _print_dry_run(jobs: list) -> int:
    import json

    for job in jobs:
        print(f"# job {job.job_id}")
        print(json.dumps(job.to_dict(), indent=2, sort_keys=True, default=str))
    print(f"{len(jobs)} job(s)")
    return 0


def _execute(planned: Any, progress: bool = True) -> int:
    """Run the plan (harness.api.execute) and print the run's summary table; exit status 2 if a
    job's data was unusable, 1 if a job failed (each failure is in its error.json), else 0."""
    from harness import api

    bad, failed = api.execute(planned, progress)
    store = planned.store
    if _rank() == 0:
        print((store.root / "summary.md").read_text())
        print(f"results: {store.root} (table: {store.root / 'summary.md'})")
    return 2 if bad else 1 if failed else 0


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
    if what in ("all", "suites"):
        from harness.reproduce.command import format_suites

        print(format_suites())
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

    rows = api.params(args.methods, args.backbone, args.pretrained, args.frames, args.classes, args.sets, flops=args.flops)
    print(format_params_table(rows, args.format))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.commands.bench import bench_command

    return bench_command(args)


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from harness.data.upstream import fetch_command

        return fetch_command(args.splits_root, args.cache, args.only)
    if args.data_command == "prepare":
        from harness.commands.data import prepare_command

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
    from harness.commands.data import check_command

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
    """Plan the checkpoint's evaluation jobs (harness.api.evaluation_plan: the checkpoint, every
    option and each job's data checked first), then run them like a run's."""
    from harness import api

    def make_plan(a: argparse.Namespace) -> Any:
        ev = api.EvalRequest(checkpoint=a.checkpoint, protocol=a.protocol, dataset=a.dataset, method=a.method,
                             backbone=a.backbone, pretrained=a.pretrained,
                             splits=_int_list(a.splits, "--splits") if a.splits else None,
                             shots=_int_list(a.shots, "--shots") if a.shots else None, seed=a.seed,
                             sets=a.sets, profile=a.profile, out=a.out, data_root=a.data_root,
                             splits_root=a.splits_root, cache=a.cache)
        return api.evaluation_plan(ev, dry_run=a.dry_run)

    launcher = launcher_config(args)
    planned = _planned(args, make_plan)
    return _dispatch(planned, args, launcher)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.reproduce.command import cmd_reproduce as reproduce

    return reproduce(args)


def cmd_predict(args: argparse.Namespace) -> int:
    from harness.convert.predict import predict_command

    return predict_command(args)


COMMANDS = {"run": cmd_run, "ls": cmd_ls, "params": cmd_params, "bench": cmd_bench, "data": cmd_data,
            "report": cmd_report, "status": cmd_status, "convert": cmd_convert, "predict": cmd_predict,
            "eval": cmd_eval, "reproduce": cmd_reproduce}


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
