"""A corpus of bad inputs (issue 12): each gets one clear line naming the culprit, exit 2, no
traceback, before any training step, and never touches a finished result.

Table-driven: argv (with {cache}, {out}, {tmp}, {root} placeholders), the expected message
fragment, the exit code, how many `harness: error:` lines, and an optional setup that breaks a
private copy of the embedded dataset or simulates the environment (a full disk, a read-only or
unreadable folder: the tests may run as root, for whom permissions do not apply). Every case
runs through both front ends: the CLI in-process, and (every case with an API form: `run`,
`params`, `bench`) the Python API (`harness.api.request` / `plan` / `run` / `params` / `bench`
with the same options as keywords), with the same outcome: the same problems, one line each,
before any job starts, or the same job recorded as failed. `run` cases write into one shared
finished result whose files are checksummed before and after each case. Data cases use
`--methods aim` (the finished job is zeroshot's) and assert that no job was started for the
jobs whose data is bad.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import api
from harness.cli import build_parser, main
from harness.errors import HarnessError

B2N = "datasets_splits/base2novel_splits/embedded_splits"


def RUN(*extra: str, methods: str = "aim") -> list[str]:
    """A tiny base2novel run (one job per method) into the shared finished result folder."""
    return ["run", "--methods", methods, "--protocol", "base2novel", "--profile", "tiny", "--pretrained", "random",
            "--no-progress", "--cache", "{cache}", "--out", "{out}", *extra]


def DRY(*extra: str, methods: str = "aim") -> list[str]:
    return RUN(*extra, methods=methods) + ["--dry-run"]


# ---- setups: break a private copy of the embedded dataset ({root}) or the environment ---------

def _edit(rel: str, change: Callable[[str], str]) -> Callable:
    def setup(ctx: dict, monkeypatch) -> None:
        path = ctx["root"] / rel
        path.write_text(change(path.read_text()))
    return setup


def _replace_line(rel: str, index: int, text: str) -> Callable:
    def change(old: str) -> str:
        lines = old.splitlines()
        lines[index] = text
        return "\n".join(lines) + "\n"
    return _edit(rel, change)


def _video(rel_list: str, index: int, make: Callable[[bytes], bytes]) -> Callable:
    """Replace the `index`-th video of a list by `make(its bytes)`."""
    def setup(ctx: dict, monkeypatch) -> None:
        name = (ctx["root"] / rel_list).read_text().splitlines()[index].rsplit(None, 1)[0]
        path = ctx["root"] / "videos" / name
        path.write_bytes(make(path.read_bytes()))
    return setup


def _drop_description(ctx: dict, monkeypatch) -> None:
    path = ctx["root"] / "description" / "2_s_description_embedded_base.json"
    data = json.loads(path.read_text())
    data.pop("3")
    path.write_text(json.dumps(data))


def _short_description(ctx: dict, monkeypatch) -> None:
    path = ctx["root"] / "description" / "2_s_description_embedded_base.json"
    data = json.loads(path.read_text())
    data["2"] = data["2"][:1]
    path.write_text(json.dumps(data))


def _remove_videos(rel_list: str, count: int) -> Callable:
    def setup(ctx: dict, monkeypatch) -> None:
        for line in (ctx["root"] / rel_list).read_text().splitlines()[:count]:
            (ctx["root"] / "videos" / line.rsplit(None, 1)[0]).unlink()
    return setup


def _file(name: str, data: bytes | str) -> Callable:
    def setup(ctx: dict, monkeypatch) -> None:
        path = ctx["tmp"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def _checkpoint(state: dict) -> Callable:
    def setup(ctx: dict, monkeypatch) -> None:
        import torch

        torch.save({k: torch.zeros(v) for k, v in state.items()}, ctx["tmp"] / "ckpt.pt")
    return setup


def _read_only(ctx: dict, monkeypatch) -> None:
    real = tempfile.TemporaryFile

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == ctx["tmp"] / "ro":
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    (ctx["tmp"] / "ro").mkdir()
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def _unreadable(ctx: dict, monkeypatch) -> None:
    real = os.listdir

    def refuse(path="."):
        if Path(path) == ctx["out"] / "jobs":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "listdir", refuse)


def _disk_full(ctx: dict, monkeypatch) -> None:
    import harness.store as store

    real = store.atomic_write_json

    def full(path, obj, **kw):
        if Path(path).name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj, **kw)

    monkeypatch.setattr(store, "atomic_write_json", full)


def _truncate_result(ctx: dict, monkeypatch) -> None:
    """A truncated metrics.json in a copy of the finished result (the shared one stays intact)."""
    shutil.copytree(ctx["out"], ctx["tmp"] / "copy")
    (metrics,) = (ctx["tmp"] / "copy").glob("jobs/*/metrics.json")
    metrics.write_text(metrics.read_text()[:100])


@dataclass
class Case:
    id: str
    argv: list[str]
    fragment: str
    code: int = 2
    lines: int = 1  # `harness: error:` lines (several problems of one invocation: one line each)
    setup: Callable | None = None
    data: bool = False  # needs a private (breakable) copy of the embedded dataset
    job_level: bool = True  # a data problem: only its job fails (error.json), no invocation error
    no_job_started: bool = False  # the problem must be found before any job (any training) starts
    api: bool = True  # the case has a Python API form (`run`, `params` and `bench` cases)

    @property
    def front_ends(self) -> tuple[str, ...]:
        return ("cli", "api") if self.api and self.argv[0] in ("run", "params", "bench") else ("cli",)


CASES = [
    # -- names and the --set grammar (already clear before issue 12) --
    Case("unknown-method", DRY(methods="mstaa"), "Did you mean 'msta'"),
    Case("unknown-protocol", ["run", "--methods", "aim", "--protocol", "base2novell", "--dry-run"], "unknown protocol"),
    Case("unknown-dataset", DRY("--dataset", "hmdb"), "unknown dataset"),
    Case("unknown-backbone", RUN("--backbone", "ViT-X-99"), "unknown backbone 'ViT-X-99'", no_job_started=True),
    Case("set-option-typo", DRY("--set", "aim.scal=1"), "unknown"),
    Case("set-method-not-in-run", DRY("--set", "msta.rank=4"), "not in this run"),
    Case("set-schedule-typo", DRY("--set", "schedule.epoch=1"), "unknown schedule key 'epoch'"),
    Case("set-data-typo", DRY("--set", "data.decodr=pyav"), "unknown data key 'decodr'"),
    Case("set-no-scope", DRY("--set", "epochs=3"), "expected <method>.<option>=value"),
    Case("set-int-type", DRY("--set", "schedule.frames=abc"), "schedule.frames='abc': expected int"),
    Case("set-choice", DRY("--set", "schedule.select=worst"), "must be one of last, best"),
    Case("set-data-choice", DRY("--set", "data.on_missing=ignore"), "must be one of skip, error"),
    Case("set-bool", DRY("--set", "data.color_jitter=maybe"), "data.color_jitter='maybe': expected bool"),
    Case("set-list", DRY("--set", "schedule.views=3"), "schedule.views=3: expected list"),
    Case("splits-undefined", DRY("--splits", "7"), "--splits: [7] not defined"),
    Case("splits-not-int", DRY("--splits", "one"), "expected comma-separated integers", api=False),
    Case("shard-range", DRY("--shard", "3/2"), "need 0 <= i < n"),
    # -- silently accepted before issue 12 --
    Case("frames-0", RUN("--frames", "0", methods="st_adapter"), "--frames 0: must be >= 1"),
    Case("frames-negative-set", DRY("--set", "schedule.frames=-2"), "schedule.frames=-2: must be >= 1"),
    Case("epochs-0", RUN("--set", "schedule.epochs=0", methods="st_adapter"), "schedule.epochs=0: must be >= 1"),
    Case("epochs-negative", DRY("--set", "schedule.epochs=-1"), "schedule.epochs=-1: must be >= 1"),
    Case("warmup-beyond-epochs", DRY("--set", "schedule.warmup_epochs=3"),
         "schedule.warmup_epochs=3 exceeds schedule.epochs=1"),
    Case("shots-on-base2novel", DRY("--shots", "2"), "protocol 'base2novel' has no shots"),
    Case("methods-repeated", DRY(methods="aim,aim"), "'aim' listed more than once"),
    Case("lr-negative", DRY("--set", "aim.lr=-0.001"), "aim.lr=-0.001: must be > 0"),
    Case("batch-0", DRY("--set", "schedule.batch_size=0"), "schedule.batch_size=0: must be >= 1"),
    Case("views-0", DRY("--set", "schedule.views=[0,1]"), "schedule.views=[0, 1]: expected [clips, crops]"),
    Case("label-smoothing-1", DRY("--set", "schedule.label_smoothing=1"), "must be in [0, 1)"),
    Case("max-missing-2", DRY("--set", "data.max_missing=2"), "data.max_missing=2.0: must be a fraction"),
    Case("sweep-bad-value", DRY("--sweep", "schedule.frames=4,0"), "schedule.frames=0: must be >= 1"),
    Case("sweep-bad-lr", DRY("--sweep", "aim.lr=0.001,-1"), "aim.lr=-1"),
    Case("sweep-syntax", DRY("--sweep", "aim.lr"), "expected KEY=V1,V2"),
    Case("sweep-repeated-value", DRY("--sweep", "schedule.frames=4,4"), "appears twice"),
    Case("all-problems-together", RUN("--frames", "0", "--set", "schedule.epoch=1", "--set", "msta.rank=4",
                                      methods="aim,aim"), "listed more than once", lines=4),
    # -- found late or never before issue 22 --
    Case("seed-negative", RUN("--seed", "-1"), "--seed -1: must be an integer in [0, 4294967295]",
         no_job_started=True),
    Case("seed-beyond-numpy", RUN("--seed", str(2**32)), f"--seed {2**32}: must be an integer in [0, 4294967295]",
         no_job_started=True),
    Case("frames-beyond-max", RUN("--frames", "10000", methods="st_adapter"),
         "schedule.frames=10000 (--frames): st_adapter runs at most 64 frames per clip", no_job_started=True),
    Case("frames-0-hides-nothing", RUN("--frames", "0", "--set", "schedule.epochs=0", "--set", "schedule.batch_size=0",
                                       methods="st_adapter"), "schedule.batch_size=0: must be >= 1", lines=3,
         no_job_started=True),
    Case("sweep-frames-beyond-max", DRY("--sweep", "schedule.frames=8,65"), "schedule.frames=65 (--frames): aim runs "
         "at most 64"),
    Case("real-dataset-random-weights", ["run", "--methods", "aim", "--protocol", "fully_supervised", "--dataset",
                                         "folder:{tmp}", "--profile", "tiny", "--no-progress", "--out", "{out}"],
         "--pretrained not given: ViT-B-16 would train from random weights on folder:", no_job_started=True),
    Case("params-frames-beyond-max", ["params", "--methods", "aim", "--frames", "65"], "--frames 65: aim runs at most 64"),
    Case("bench-frames-beyond-max", ["bench", "--methods", "aim", "--frames", "100", "--smoke"],
         "--frames 100: aim runs at most 64"),
    Case("params-frames-classes-0", ["params", "--methods", "aim", "--frames", "0", "--classes", "0"],
         "--classes 0: must be >= 1", lines=2),
    Case("bench-batch-0", ["bench", "--batch", "0"], "--batch 0: must be >= 1"),
    Case("ls-recipes-typo", ["ls", "recipes", "--method", "stadapter"], "Did you mean 'st_adapter'"),
    # -- files and folders --
    Case("out-is-a-file", RUN("--out", "{tmp}/file"), "is a file; give a folder", setup=_file("file", "x")),
    Case("out-under-a-file", RUN("--out", "{tmp}/file/sub"), "{tmp}/file is a file, so no folder",
         setup=_file("file", "x")),
    Case("out-read-only", RUN("--out", "{tmp}/ro"), "cannot write there (Read-only file system)", setup=_read_only),
    Case("results-unreadable", ["report", "{out}"], "cannot read there (Permission denied)", setup=_unreadable),
    Case("report-not-results", ["report", "{tmp}"], "not a results directory"),
    Case("report-truncated-metrics", ["report", "{tmp}/copy"], "metrics.json: unreadable result (JSONDecodeError",
         setup=_truncate_result),
    Case("report-foreign-json", ["report", "{tmp}/foreign"], "metrics.json: not a harness result (it lacks job_id, "
         "job, metrics)", setup=_file("foreign/jobs/a/metrics.json", '{"accuracy": 0.9}')),
    Case("pretrained-missing", RUN("--pretrained", "/nonexistent.pt"), "--pretrained /nonexistent.pt: no such file"),
    Case("pretrained-folder", RUN("--pretrained", "{tmp}"), "is a folder; pass a checkpoint file"),
    Case("pretrained-text-file", RUN("--pretrained", "{tmp}/notes.txt", methods="st_adapter"),
         "not a checkpoint (it starts with 'hello world", setup=_file("notes.txt", "hello world\n")),
    Case("pretrained-random-bytes", RUN("--pretrained", "{tmp}/junk.pt"), "not a checkpoint",
         setup=_file("junk.pt", bytes(range(7, 200)))),
    Case("pretrained-wrong-shape", RUN("--pretrained", "{tmp}/ckpt.pt", "--backbone", "harness-tiny"),
         "checkpoint key 'visual.conv1.weight' has shape (3, 3)", setup=_checkpoint({"visual.conv1.weight": (3, 3)})),
    Case("pretrained-wrong-keys", RUN("--pretrained", "{tmp}/ckpt.pt", "--backbone", "harness-tiny"),
         "does not match the backbone (missing", setup=_checkpoint({"foo": (1,)})),
    Case("disk-full-writing-result", RUN(), "No space left on device): the disk is full", setup=_disk_full),
    # -- data: lists, class files, videos, descriptions --
    Case("novel-val-malformed", RUN(), "novel_val.txt:3: malformed line 'no_label_here.mp4'",
         setup=_replace_line(f"{B2N}/novel_val.txt", 2, "no_label_here.mp4"), data=True, no_job_started=True),
    Case("novel-val-empty", RUN(), "novel_val.txt: the list is empty", setup=_edit(f"{B2N}/novel_val.txt", lambda t: ""),
         data=True, no_job_started=True),
    Case("label-out-of-range", RUN(), "base_val.txt:1: label 99 outside [0, 6)",
         setup=_edit(f"{B2N}/base_val.txt", lambda t: t.replace(" 0\n", " 99\n", 1)), data=True, no_job_started=True),
    Case("label-not-int", RUN(), "label 'x' is not an integer",
         setup=_edit(f"{B2N}/base_val.txt", lambda t: t.replace(" 0\n", " x\n", 1)), data=True, no_job_started=True),
    Case("class-csv-duplicate", RUN(), "embedded_base_labels.csv:3: class name 'a shape moving left' repeats line 2",
         data=True, job_level=False, no_job_started=True,
         setup=_replace_line("labels/embedded_base_labels.csv", 2, "1,a shape moving left")),
    Case("class-csv-no-header", RUN(), "expected the header 'id,name'", data=True, job_level=False,
         no_job_started=True,
         setup=_edit("labels/embedded_base_labels.csv", lambda t: t.split("\n", 1)[1])),
    Case("video-random-bytes", RUN(), "not an MP4/MOV file", data=True, no_job_started=True,
         setup=_video(f"{B2N}/novel_val.txt", 5, lambda b: os.urandom(len(b)))),
    Case("video-truncated", RUN(), "truncated: atom", data=True, no_job_started=True,
         setup=_video(f"{B2N}/novel_val.txt", 5, lambda b: b[: len(b) // 2])),
    Case("video-zero-bytes", RUN(), "empty file (0 bytes)", data=True, no_job_started=True,
         setup=_video(f"{B2N}/fs_base_s1_train.txt", 0, lambda b: b"")),
    Case("videos-missing", RUN("--set", "data.on_missing=error"), "are missing under", data=True,
         no_job_started=True, setup=_remove_videos(f"{B2N}/base_val.txt", 1)),
    Case("descriptions-too-few", RUN(methods="msta"), "class id 2 has 1 description(s), N=2 needed. Add descriptions",
         data=True, no_job_started=True, setup=_short_description),
    Case("descriptions-missing-class", RUN(methods="msta"), "no descriptions for class id 3", data=True,
         no_job_started=True, setup=_drop_description),
    # -- base-to-novel class sets checked against each other (issue 22) --
    Case("novel-class-is-a-base-class", RUN(), "embedded_novel_labels.csv: class 'a shape moving left' (id 5) is also "
         "a base class", data=True, job_level=False, no_job_started=True,
         setup=_replace_line("labels/embedded_novel_labels.csv", 6, "5,a shape moving left")),
    Case("novel-class-differs-in-case-only", RUN(), "class 'A Shape Moving_Left' (id 5) is also a base class",
         data=True, job_level=False, no_job_started=True,
         setup=_replace_line("labels/embedded_novel_labels.csv", 6, "5,A Shape Moving_Left")),
    Case("novel-list-has-a-training-video", RUN(), "of novel class 'a shape disappearing' is also in the training "
         "list", data=True, no_job_started=True,
         setup=_edit(f"{B2N}/novel_val.txt", lambda t: t + "train_move_left_000.mp4 3\n")),
]


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(harness_cache, tmp_path_factory):
    """One finished result (zeroshot, tiny profile, one job) shared by every case."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["run", "--methods", "zeroshot", "--protocol", "base2novel", "--profile", "tiny", "--pretrained",
                 "random", "--no-progress", "--cache", str(harness_cache), "--out", str(out)]) == 0
    (job,) = (out / "jobs").iterdir()
    return out, job


def _private_cache(harness_cache: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of the session's embedded dataset that a case may break."""
    (source,) = [p for p in (harness_cache / "embedded").iterdir() if (p / "recipe.json").is_file()]
    cache = tmp / "cache"
    shutil.copytree(source, cache / "embedded" / source.name)
    return cache, cache / "embedded" / source.name


def _api(argv: list[str]) -> None:
    """The case through the Python API: the command's options as keyword arguments of
    `harness.api` (what a script would write); raises what the API raises."""
    args = build_parser().parse_args(argv)
    ints = lambda text: [int(x) for x in text.split(",")] if text else None  # noqa: E731
    if args.command == "params":
        api.params(args.methods, args.backbone, args.pretrained, args.frames, args.classes, args.sets)
    elif args.command == "bench":
        api.bench(args.methods or "zeroshot", args.sets, batch=args.batch, frames=args.frames, iters=args.iters,
                  warmup=args.warmup, image_size=args.image_size, num_classes=args.num_classes,
                  backbone="harness-tiny", device="cpu", progress=None)
    else:
        req = api.request(args.methods, args.protocol, dataset=args.dataset, backbone=args.backbone,
                          pretrained=args.pretrained, sets=args.sets, profile=args.profile, seed=args.seed,
                          frames=args.frames, splits=ints(args.splits), shots=ints(args.shots),
                          cache_dir=args.cache)
        shard = tuple(int(x) for x in args.shard.split("/")) if args.shard else (0, 1)
        if args.dry_run:
            api.plan(req, args.out, sweeps=args.sweeps, shard=shard, dry_run=True)
        else:
            api.run(req, args.out, sweeps=args.sweeps, shard=shard, progress=False)


@pytest.mark.parametrize("case, front", [(c, f) for c in CASES for f in c.front_ends],
                         ids=[f"{c.id}-{f}" for c in CASES for f in c.front_ends])
def test_bad_input(case, front, finished, harness_cache, tmp_path, capsys, monkeypatch, skip_training):
    out, job = finished
    ctx = {"cache": harness_cache, "out": out, "tmp": tmp_path, "root": None}
    if case.data:
        ctx["cache"], ctx["root"] = _private_cache(harness_cache, tmp_path)
    if case.setup:
        case.setup(ctx, monkeypatch)
    started = []
    import harness.engine.runner as runner_mod

    real_run_job = runner_mod.run_job
    monkeypatch.setattr(runner_mod, "run_job", lambda j, *a, **k: started.append(j.job_id) or real_run_job(j, *a, **k))
    before = _checksums(job)
    argv = [a.format(**ctx) for a in case.argv]
    fragment = case.fragment.format(**ctx)
    if front == "cli":
        code = main(argv)
        err = capsys.readouterr().err
        assert code == case.code, err
        assert "Traceback" not in err
        errors = [line.removeprefix("harness: error: ") for line in err.splitlines()
                  if line.startswith("harness: error:")]
    else:  # the API raises the invocation's problems (one per line) or records the job's failure
        try:
            _api(argv)
            errors = []
        except HarnessError as raised:
            errors = str(raised).splitlines()
        err = capsys.readouterr().err + "\n".join(errors)
    assert fragment in err, err
    if case.data and case.job_level:  # only the job reading the bad data fails, recorded with its reason
        assert len(errors) == 0 and "not run:" in err and err.count(fragment) == 1, err
        (record,) = out.glob("jobs/*/error.json")
        assert fragment in json.loads(record.read_text())["message"]
        record.unlink()
    else:
        assert len(errors) == case.lines, err
        assert any(fragment in line for line in errors), errors
    if case.no_job_started:
        assert started == [], "the bad input was found only after a job started"
    assert _checksums(job) == before, "a finished result changed"


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert sum("api" in c.front_ends for c in CASES) >= 50  # every case with an API form runs through it


def test_corrupt_novel_list_found_before_any_training(finished, harness_cache, tmp_path, capsys, monkeypatch):
    """The issue's done-when: found before any training step (no skip_training stub here: a
    training step would run for real), and the other method's job still runs."""
    import harness.engine.runner as runner_mod

    out, job = finished
    cache, root = _private_cache(harness_cache, tmp_path)
    _replace_line(f"{B2N}/fs_base_s2_train.txt", 0, "broken_line")({"root": root}, monkeypatch)
    steps = []
    monkeypatch.setattr(runner_mod, "train", lambda *a, **k: steps.append(a[2].split) or {"iters": 0})
    code = main(["run", "--methods", "aim", "--protocol", "base2novel", "--profile", "tiny", "--splits", "1,2",
                 "--pretrained", "random", "--no-progress", "--cache", str(cache), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "fs_base_s2_train.txt:1: malformed line 'broken_line'" in err
    assert steps == [1]  # split 2's job never reached training; split 1's ran
    assert len(list((tmp_path / "out").glob("jobs/*/metrics.json"))) == 1
    assert len(list((tmp_path / "out").glob("jobs/*/error.json"))) == 1


def test_every_corrupt_video_is_reported(harness_cache, tmp_path, capsys, monkeypatch, skip_training):
    """Both the up-front check of a run and `harness data check` name every bad video."""
    cache, root = _private_cache(harness_cache, tmp_path)
    for index in (1, 7, 30):
        _video(f"{B2N}/novel_val.txt", index, lambda b: b[: len(b) // 2])({"root": root}, monkeypatch)
    code = main(RUN()[:-4] + ["--cache", str(cache), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "3 of 48 videos listed in" in err and err.count("truncated") == 3, err
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    code = main(["data", "check", "--dataset", "embedded", "--role", "b2n_novel_val", "--sample", "2"])
    out = capsys.readouterr().out
    assert code == 1 and out.count("unreadable:") == 3, out


def test_truncated_result_is_never_counted_as_finished(finished, tmp_path, harness_cache, capsys):
    out, job = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    metrics = copy / "jobs" / job.name / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])
    assert main(["status", str(copy)]) == 0
    assert "metrics.json (truncated?): rerun" in capsys.readouterr().out
    code = main(["run", "--methods", "zeroshot", "--protocol", "base2novel", "--profile", "tiny", "--pretrained",
                 "random", "--no-progress", "--cache", str(harness_cache), "--out", str(copy)])
    err = capsys.readouterr().err
    assert code == 0 and "finished earlier" not in err, err
    assert json.loads(metrics.read_text())["job_id"] == job.name  # recomputed, complete again


def test_checkpoint_error_names_the_key_without_offline_advice():
    from harness.backbone import checkpoint_error

    err = RuntimeError("Error(s) in loading state_dict for CLIP:\n\tsize mismatch for positional_embedding: copying "
                       "a param with shape torch.Size([50, 768]) from checkpoint, the shape in current model is "
                       "torch.Size([197, 768]).")
    text = str(checkpoint_error(Path("/w/b32.pt"), "ViT-B-16", err))
    assert "size mismatch for positional_embedding" in text and "/w/b32.pt" in text
    assert "download" not in text and "offline" not in text and "\n" not in text


def test_probe_verdicts_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import harness.data.probe as probe

    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    cache = probe.ProbeCache(tmp_path)
    assert cache.check(video) == "empty file (0 bytes)"
    cache.save()
    calls = []
    monkeypatch.setattr(probe, "probe_video", lambda p: calls.append(p) or None)
    assert probe.ProbeCache(tmp_path).check(video) == "empty file (0 bytes)" and calls == []  # from the cache
    video.write_bytes(b"1234")
    assert probe.ProbeCache(tmp_path).check(video) is None and len(calls) == 1  # changed: probed again


def test_progress_bar_does_not_warn_on_a_loss_that_requires_grad():
    import warnings

    import torch

    from harness.engine.hooks import ProgressBarHook

    hook = ProgressBarHook("x")

    class Bar:
        def update(self, n): pass
        def set_postfix(self, values, refresh): self.values = values

    hook.bar = Bar()
    loss = (torch.ones(1, requires_grad=True) * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hook.after_train_iter(None, 0, outputs={"loss": loss})
    assert hook.bar.values == {"loss": "2.000"}


def test_debug_shows_the_traceback(capsys, monkeypatch):
    code = main(["--debug", "params", "--methods", "aim", "--frames", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.rstrip().endswith("harness: error: --frames 0: must be >= 1")
    monkeypatch.setenv("HARNESS_DEBUG", "1")
    assert main(["params", "--methods", "aim", "--frames", "0"]) == 2 and "Traceback" in capsys.readouterr().err


def test_a_shard_that_selects_no_job_says_so(finished, harness_cache, tmp_path, capsys, skip_training):
    """More shards than jobs (a SLURM array larger than the grid): the shard is empty, said so,
    exit 0, nothing written; a shard with a job still runs."""
    out = tmp_path / "out"
    argv = [a.format(cache=harness_cache, out=out) for a in RUN("--shard", "1/2")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "shard 1/2 is empty: the invocation has 1 job(s), so only shards 0..0 of 2 run any" in captured.err
    assert "no finished jobs" not in captured.out and not (out / "invocations").exists()
    argv[argv.index("1/2")] = "0/2"
    assert main(argv) == 0 and len(list(out.glob("jobs/*/metrics.json"))) == 1


@pytest.fixture(scope="module")
def run_checkpoint(harness_cache, tmp_path_factory):
    """A run checkpoint of st_adapter (tiny profile, random weights): what `harness eval` reads."""
    out = tmp_path_factory.mktemp("ckpt-run")
    assert main(["run", "--methods", "st_adapter", "--protocol", "base2novel", "--profile", "tiny", "--pretrained",
                 "random", "--no-progress", "--cache", str(harness_cache), "--out", str(out)]) == 0
    (ckpt,) = out.glob("jobs/*/work/epoch_*.pth")
    return ckpt


@pytest.mark.parametrize("front", ["cli", "api"])
def test_eval_checks_the_data_of_its_jobs(front, run_checkpoint, harness_cache, tmp_path, capsys, monkeypatch):
    """`harness eval` plans its jobs like a run: a corrupt list fails its job before it starts."""
    import harness.engine.runner as runner_mod

    cache, root = _private_cache(harness_cache, tmp_path)
    _replace_line(f"{B2N}/novel_val.txt", 2, "no_label_here.mp4")({"root": root}, monkeypatch)
    started = []
    monkeypatch.setattr(runner_mod, "run_job", lambda job, *a, **k: started.append(job.job_id))
    out = tmp_path / "eval"
    if front == "cli":
        code = main(["eval", "--checkpoint", str(run_checkpoint), "--protocol", "base2novel", "--profile", "tiny",
                     "--cache", str(cache), "--out", str(out), "--no-progress"])
        assert code == 2
    else:
        store = api.evaluate(api.EvalRequest(checkpoint=str(run_checkpoint), protocol="base2novel", profile="tiny",
                                             cache=str(cache), out=str(out)), progress=False)
        assert [f["message"] for f in store.failed_records()][0].endswith("malformed line 'no_label_here.mp4'; "
                                                                          "expected 'relative/path.ext label' "
                                                                          "(fields separated by whitespace).")
    err = capsys.readouterr().err
    assert "novel_val.txt:3: malformed line 'no_label_here.mp4'" in err and "not run:" in err
    assert started == [] and len(list(out.glob("jobs/*/error.json"))) == 1


def test_order_pairs_check_the_data_of_their_jobs(harness_cache, tmp_path, monkeypatch):
    """`harness bench --order-pairs` plans through harness.api too: a truncated video of the list
    it evaluates stops it, naming the video, before any training."""
    import harness.engine.runner as runner_mod
    from harness.commands.order_pairs import run_order_pairs

    cache, root = _private_cache(harness_cache, tmp_path)
    _video("datasets_splits/embedded_splits/val.txt", 3, lambda b: b[: len(b) // 2])({"root": root}, monkeypatch)
    started = []
    monkeypatch.setattr(runner_mod, "run_job", lambda job, *a, **k: started.append(job.job_id))
    with pytest.raises(HarnessError, match="order-pair training of zeroshot failed: HarnessError: 1 of .* videos "
                                           "listed in .*val.txt are not readable videos: .*truncated"):
        run_order_pairs(["zeroshot"], tmp_path / "out", epochs=1, cache_dir=str(cache))
    assert started == []
