"""`harness bench`: its options, which of them each kind of bench honours, and the throughput
bench's front end (also the thin entry `python -m harness.commands.bench`, which the GPU script
uses: no harness CLI, no mmengine).

Four benches share the command: throughput / MFU / memory of the methods (the default), the data
pipeline on a dataset's training list (`--data`), every decode path on generated videos
(`--data --synthetic`) and frame-order sensitivity (`--order-pairs`). An option a bench does not
honour is refused with one line naming it (`check_options`), never silently ignored.

Throughput defaults fit the device: ViT-B/16, batch 32, 400 classes, bf16, 20 timed steps on a
GPU; on a CPU, where that would take hours, harness-tiny, batch 4, 16 classes, fp32, 5 timed
steps (any option given explicitly wins), announced with the settings before the first model is
built.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from harness.commands import print_json, write_json
from harness.errors import HarnessError

#: Defaults per device type; an option left unset (None) takes the one of the resolved device.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"backbone": "ViT-B-16", "batch": 32, "num_classes": 400, "amp": "bf16", "iters": 20, "warmup": 5},
    "cpu": {"backbone": "harness-tiny", "batch": 4, "num_classes": 16, "amp": "none", "iters": 5, "warmup": 2},
}
#: What `--smoke` sets: proves the pipeline end to end in about a minute on a CPU.
SMOKE = {"backbone": "harness-tiny", "batch": 2, "frames": 2, "iters": 2, "warmup": 1}
#: Frames per clip when `--frames` is not given.
DEFAULT_FRAMES = 8

#: The options (argparse destinations) each bench honours, besides `--format`; any other option
#: given is refused. The mode flags themselves are `data`, `synthetic` and `order_pairs`.
THROUGHPUT = "throughput"
DATA = "--data"
SYNTHETIC = "--data --synthetic"
ORDER_PAIRS = "--order-pairs"
HONOURED: dict[str, frozenset[str]] = {
    THROUGHPUT: frozenset({"methods", "backbone", "pretrained", "batch", "frames", "image_size", "amp", "compile",
                           "frozen_bf16", "iters", "warmup", "device", "num_classes", "modes", "no_baseline", "sets",
                           "time_budget", "json_path", "append", "md_path", "report_only", "smoke"}),
    DATA: frozenset({"data", "dataset", "data_root", "frames", "image_size", "samples", "json_path", "cache"}),
    SYNTHETIC: frozenset({"data", "synthetic", "decoders", "frames", "image_size", "samples", "runs", "subsampling",
                          "gop", "json_path", "cache"}),
    ORDER_PAIRS: frozenset({"order_pairs", "methods", "epochs", "out", "seeds", "sets", "json_path", "md_path",
                            "cache"}),
}


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The throughput bench's options (every one with help text)."""
    p.add_argument("--methods", default=None,
                   help="comma-separated method names or 'all' (default: zeroshot; harness bench --order-pairs: "
                   "every method, those whose contract says they model frame order first)")
    p.add_argument("--backbone", default=None,
                   help="open_clip model or small config (default: ViT-B-16 on GPU, harness-tiny on CPU)")
    p.add_argument("--pretrained", default=None, help="open_clip tag or local file (default: random init)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: 32 on GPU, 4 on CPU)")
    p.add_argument("--frames", type=int, default=None, help=f"frames per clip (default {DEFAULT_FRAMES})")
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the backbone's)")
    p.add_argument("--amp", choices=("bf16", "none"), default=None,
                   help="bf16 autocast or none (default: bf16 on GPU, none on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the video (and text) encoders")
    p.add_argument("--frozen-bf16", action="store_true", help="store frozen weights in bf16 (needs --amp bf16)")
    p.add_argument("--iters", type=int, default=None, help="timed steps per mode; the median is reported "
                   "(default: 20 on GPU, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first, the first one includes "
                   "compilation (default: 5 on GPU, 2 on CPU)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class names scored per step (default: 400 on GPU, 16 on CPU)")
    p.add_argument("--modes", default="train,infer", help="comma-separated: train (a full optimiser step), "
                   "infer (eval forward without autograd)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain open_clip visual tower row")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                   help="a method option, as for harness run (repeatable)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds from now after which no further method is started")
    p.add_argument("--json", dest="json_path", default=None, help="write the results here as JSON (throughput: "
                   "updated after each row)")
    p.add_argument("--append", action="store_true", help="keep rows already in --json")
    p.add_argument("--md", dest="md_path", default=None, help="write a Markdown table here")
    p.add_argument("--format", default="table", choices=("table", "json"), help="what is printed at the end "
                   "(json: only the JSON document on stdout)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: format the rows already in --json (to stdout and --md)")
    p.add_argument("--smoke", action="store_true",
                   help="harness-tiny, batch 2, 2 frames, 2 iters (CPU unless --device): the pipeline end to end")


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """Every option of `harness bench`: the throughput bench's and those of the other benches."""
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


def bench_kind(args: argparse.Namespace) -> str:
    """Which bench the options ask for."""
    if args.data and args.order_pairs:
        raise HarnessError("--data and --order-pairs: choose one bench")
    if args.synthetic and not args.data:
        raise HarnessError("--synthetic: only with --data (`harness bench --data --synthetic kinetics-like`)")
    if args.data:
        return SYNTHETIC if args.synthetic else DATA
    return ORDER_PAIRS if args.order_pairs else THROUGHPUT


def check_options(args: argparse.Namespace, kind: str) -> None:
    """Every option given that the bench `kind` would ignore: one line each, naming the option."""
    from harness.validate import Problems, check_positive

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    defaults = {action.dest: action.default for action in parser._actions}
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    name = "harness bench" + ("" if kind == THROUGHPUT else f" {kind}")
    problems = Problems()
    for dest, default in defaults.items():
        if dest not in ("format", "help") and dest not in HONOURED[kind] and getattr(args, dest, default) != default:
            problems.lines.append(f"{flags[dest]}: does not apply to `{name}`; leave it out")
    counts = ("epochs", "samples", "runs", "gop") + (() if kind == THROUGHPUT else ("frames", "image_size"))
    check_positive(problems, {flags[d]: getattr(args, d) for d in counts if d in HONOURED[kind]})
    problems.raise_if_any()


def bench_command(args: argparse.Namespace) -> int:
    """`harness bench`: the bench the options ask for, after refusing options it would ignore."""
    kind = bench_kind(args)
    check_options(args, kind)
    if kind == SYNTHETIC:
        from harness.commands.decode import synthetic_command

        return synthetic_command(args)
    if kind == DATA:
        from harness.commands.decode import data_command

        return data_command(args)
    if kind == ORDER_PAIRS:
        from harness.commands.order_pairs import order_pairs_command

        return order_pairs_command(args)
    return run_bench_command(args)


def resolve_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The bench settings: explicit options, then `--smoke`, then the device's defaults."""
    import torch

    given = {k: getattr(args, k) for k in ("backbone", "batch", "frames", "iters", "warmup", "num_classes", "amp")}
    if args.smoke:  # fills what was not given: an explicit option still wins
        given = {k: SMOKE.get(k) if v is None else v for k, v in given.items()}
        given["num_classes"] = min(args.num_classes or 8, 8)
    device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    defaults = {**DEVICE_DEFAULTS["cuda" if device.startswith("cuda") else "cpu"], "frames": DEFAULT_FRAMES}
    settings = {k: defaults[k] if v is None else v for k, v in given.items()}
    settings["device"] = device
    return settings


def _announce(settings: dict[str, Any], methods: list[str], modes: Sequence[str], baseline: bool) -> None:
    """Say what is about to run (to stderr), so that a slow run is never a silent one."""
    models = len(methods) + (1 if baseline else 0)
    steps = settings["iters"] + settings["warmup"]
    print(f"bench on {settings['device']}: {settings['backbone']}, batch {settings['batch']} x {settings['frames']} "
          f"frames, {settings['num_classes']} classes, amp {settings['amp']}; {models} model(s) x {len(modes)} "
          f"mode(s) x {steps} steps ({settings['warmup']} untimed)", file=sys.stderr, flush=True)


def _report_only(args: argparse.Namespace) -> int:
    from harness.measure.bench_format import format_bench

    if not args.json_path or not os.path.exists(args.json_path):
        raise HarnessError("--report-only needs an existing --json file")
    with open(args.json_path) as handle:
        rows = json.load(handle)
    _print_rows(rows, args.format)
    if args.md_path:
        with open(args.md_path, "w") as handle:
            handle.write(format_bench(rows, "markdown"))
    return 0


def _print_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    from harness.measure.bench_format import format_bench

    if fmt == "json":
        print_json(rows)
    else:
        print(format_bench(rows, fmt))


def run_bench_command(args: argparse.Namespace) -> int:
    """Run the bench for parsed options; rows are printed (and saved to --json) as they come."""
    if args.report_only:
        return _report_only(args)
    from harness import api
    from harness.measure.bench import MODES, format_bench

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    settings = resolve_defaults(args)
    previous: list[dict[str, Any]] = []
    if args.append and args.json_path and os.path.exists(args.json_path):
        with open(args.json_path) as handle:
            previous = json.load(handle)
    rows: list[dict[str, Any]] = []

    def save(row: dict[str, Any]) -> None:
        rows.append(row)
        print(format_bench([row], "table").splitlines()[-1], file=sys.stderr, flush=True)
        if args.json_path:
            write_json(args.json_path, previous + rows)

    deadline = time.time() + args.time_budget if args.time_budget else None
    # --set items are checked against every registered method, not only those benched: one set of
    # items serves every pass of a script (scripts/gpu_bench.sh: eager pass, compile pass).
    announce = lambda methods: _announce(settings, methods, modes or MODES, not args.no_baseline)  # noqa: E731
    api.bench(args.methods or "zeroshot", args.sets, on_start=announce, pretrained=args.pretrained,
              image_size=args.image_size, compile=args.compile, modes=modes, baseline=not args.no_baseline,
              frozen_bf16=args.frozen_bf16, deadline=deadline, on_row=save,
              progress=lambda text: print(text, file=sys.stderr, flush=True), **settings)
    _print_rows(rows, args.format)
    if args.md_path:
        with open(args.md_path, "w") as handle:
            handle.write(format_bench(previous + rows, "markdown"))
    failed = [r for r in rows if str(r.get("status", "")).startswith("error")]
    for r in failed:
        print(f"{r['method']} {r['mode']}: {r['status']}\n{r.get('traceback', '')}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m harness.commands.bench`: the same options as `harness bench` (throughput only);
    a bad option value is one line on stderr and exit status 2."""
    from harness.measure import bench

    p = argparse.ArgumentParser(prog="python -m harness.commands.bench", description=bench.__doc__.split("\n\n")[0])
    add_bench_arguments(p)
    try:
        return run_bench_command(p.parse_args(argv))
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
