"""Every input of a `harness run` checked before the first training step.

Why a module of its own: a value that cannot produce a meaningful result (zero frames, zero
epochs, a warm-up longer than the training, a negative learning rate, an output folder that
cannot be written, a file that is no checkpoint) must stop the invocation at once, with every
such problem listed together, one line each, naming the option: fixing them one rerun at a time
wastes the user's time, and finding one only when its job starts (a sweep value, a corrupt list
of the novel classes after hours of training) wastes compute. Data problems (a malformed list,
a corrupt video, a missing description) concern only the jobs reading that data: those jobs are
recorded as failed (`error.json`) and the others run.

The checks are cheap: options are plain values; lists are parsed and every listed video gets
an existence check and a container-header probe (`harness.data.probe`, cached by path, size and
mtime); full decoding stays in `harness data check`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.backbone import _known_names, backbone_token_layout, resolve_model_name
from harness.data.annotations import read_annotation_list
from harness.data.descriptions import load_job_descriptions
from harness.data.pipeline import usable_entries
from harness.data.probe import ProbeCache
from harness.data.rephrased import load_rephrased
from harness.errors import ConfigurationError, HarnessError, unknown_name_error
from harness.jobs.spec import JobSpec, ListSpec
from harness.locks import FileLock
from harness.options import field_default
from harness.settings import DataOptions
from harness.store import RunStore
from harness.weights import SYNTHETIC_TAG
from methods.base import DESCRIPTION_NEEDS
from methods.registry import get_method

if TYPE_CHECKING:  # pragma: no cover - typing only (harness.jobs.expand reads YAML; see below)
    from harness.jobs.expand import RunRequest

T = TypeVar("T")

#: File suffixes that make a `--pretrained` value a path rather than an open_clip tag.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
#: The largest `--seed`: every RNG seeded from it (numpy's legacy seeding in the data workers
#: and k-shot sampling) takes 0 .. 2**32 - 1; beyond that a job would fail only once started.
SEED_MAX = 2**32 - 1
#: Class-CSV roles whose classes must not overlap (base-to-novel: novel classes are unseen).
DISJOINT_CLASS_ROLES = (("base_classes", "novel_classes"),)


class InvalidInvocation(ConfigurationError):
    """Several option/configuration problems of one invocation, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(dict.fromkeys(problems))  # the same problem from many jobs: once
        super().__init__("\n".join(self.problems))


class Problems:
    """Collects the one-line problems of an invocation instead of stopping at the first."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def attempt(self, step: Callable[[], T]) -> T | None:
        """Run `step`; a HarnessError becomes a listed problem (None returned)."""
        try:
            return step()
        except HarnessError as err:
            self.lines.extend(str(err).splitlines() or [type(err).__name__])
            return None

    def need(self, ok: bool, line: str) -> None:
        if not ok:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise InvalidInvocation(self.lines)


# ---- command-line values ---------------------------------------------------------------------

def check_positive(problems: Problems, values: dict[str, Any], minimum: int = 1) -> None:
    """`{"--frames": 0}` -> '--frames 0: must be >= 1' (None = not given, fine)."""
    for option, value in values.items():
        if value is not None:
            problems.need(value >= minimum, f"{option} {value}: must be >= {minimum}")


def check_method_names(problems: Problems, text: str) -> None:
    """A method listed twice would run (and count) once: say so instead of dropping it silently."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems.need(not repeated, f"--methods {text}: {', '.join(repr(n) for n in repeated)} listed more than once")


def request_problems(req: RunRequest) -> list[str]:
    """What is wrong with a `RunRequest` itself (not with its jobs): a method listed twice,
    `--frames` < 1, a seed outside numpy's range, a `--pretrained` file that is no checkpoint, an
    unknown backbone. One line each; an evaluation's weights were checked when its checkpoint
    was loaded."""
    p = Problems()
    repeated = sorted({m for m in req.methods if req.methods.count(m) > 1})
    p.need(not repeated, f"--methods {','.join(req.methods)}: {', '.join(repr(n) for n in repeated)} "
                         "listed more than once")
    check_positive(p, {"--frames": req.frames})
    seed = req.seed
    p.need(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX,
           f"--seed {seed}: must be an integer in [0, {SEED_MAX}] (2**32 - 1: the range numpy's RNGs accept)")
    if not req.checkpoint:
        p.attempt(lambda: check_pretrained_file(req.pretrained))
        p.attempt(lambda: check_backbone_name(req.backbone, req.pretrained))
    return p.lines


def check_shard(shard: tuple[int, int]) -> None:
    """`--shard i/n` as (i, n): 0 <= i < n."""
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise HarnessError(f"--shard {index}/{count}: need 0 <= i < n")


def check_results_dir(path: Path, option: str = "--out", create: bool = True) -> None:
    """A results folder that can be read and written: not a file, not under a file, writable."""
    where = f"{option} {path}"
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            if parent == path:
                raise HarnessError(f"{where}: is a file; give a folder (it is created if it does not exist)")
            raise HarnessError(f"{where}: {parent} is a file, so no folder can be created under it")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            os.listdir(path)
            jobs = path / "jobs"
            if jobs.is_dir():
                os.listdir(jobs)
            if create:
                with tempfile.TemporaryFile(dir=path):
                    pass
    except OSError as err:
        raise HarnessError(f"{where}: cannot {'write' if create else 'read'} there ({err.strerror or err}); "
                           "choose another folder or fix its permissions") from None


def check_pretrained_file(pretrained: str | None) -> None:
    """A local `--pretrained` must exist and be a checkpoint file (torch.save zip or pickle,
    safetensors): a header probe, no loading. Tags are checked when the backbone is built."""
    if pretrained is None or pretrained == SYNTHETIC_TAG:
        return
    path = Path(pretrained).expanduser()
    where = f"--pretrained {pretrained}"
    if path.is_dir():
        raise HarnessError(f"{where}: is a folder; pass a checkpoint file")
    if not path.exists():
        if os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES):
            raise HarnessError(f"{where}: no such file")
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as err:
        raise HarnessError(f"{where}: cannot read it ({err.strerror or err})") from None
    if not _looks_like_checkpoint(head):
        shown = head[:12].decode("utf-8", "replace")
        raise HarnessError(f"{where}: not a checkpoint (it starts with {shown!r}; expected a file written by "
                           "torch.save, or .safetensors)")


def check_backbone_name(backbone: str, pretrained: str | None) -> None:
    """An open_clip model name (this project's small configs are registered there), checked
    before any job instead of when the first one builds its model."""
    resolved, _ = resolve_model_name(backbone, pretrained)
    known = _known_names()
    if resolved not in known:
        raise unknown_name_error("backbone", backbone, known)


def _looks_like_checkpoint(head: bytes) -> bool:
    if head.startswith(b"PK\x03\x04"):  # torch.save (zip), TorchScript archives
        return True
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # legacy torch.save (pickle)
        return True
    if len(head) >= 9:  # safetensors: little-endian header length, then a JSON object
        return head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000
    return False


# ---- jobs ------------------------------------------------------------------------------------

def job_option_problems(job: JobSpec) -> list[str]:
    """Values that parse but cannot produce a meaningful result (one line each, naming the key)."""
    s, opts, data = job.schedule, job.method_options, job.data
    p = Problems()
    p.need(s.frames >= 1, f"schedule.frames={s.frames}: must be >= 1 (frames per clip)")
    limit = _max_frames(job.method)
    p.need(s.frames <= limit, f"schedule.frames={s.frames} (--frames): {job.method} runs at most {limit} "
                              "frames per clip (its `max_frames`); use fewer frames")
    if not job.checkpoint:  # `harness eval` trains nothing by design (epochs 0)
        p.need(s.epochs >= 1, f"schedule.epochs={s.epochs}: must be >= 1 (a result needs training; "
                              "--methods zeroshot evaluates without any)")
    p.need(s.warmup_epochs >= 0, f"schedule.warmup_epochs={s.warmup_epochs}: must be >= 0")
    if s.epochs >= 1:
        p.need(s.warmup_epochs <= s.epochs, f"schedule.warmup_epochs={s.warmup_epochs} exceeds "
               f"schedule.epochs={s.epochs}: the warm-up must fit in the training")
    p.need(s.batch_size >= 1, f"schedule.batch_size={s.batch_size}: must be >= 1")
    p.need(s.micro_batch >= 0, f"schedule.micro_batch={s.micro_batch}: must be >= 0 (0 = automatic)")
    p.need(s.val_interval >= 0, f"schedule.val_interval={s.val_interval}: must be >= 0 (0 = only at the end)")
    views = s.views
    p.need(len(views) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in views),
           f"schedule.views={views}: expected [clips, crops], two integers >= 1")
    betas = s.betas
    p.need(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
           f"schedule.betas={betas}: expected two numbers in [0, 1)")
    p.need(s.eps > 0, f"schedule.eps={s.eps}: must be > 0")
    p.need(s.lr_min_ratio >= 0, f"schedule.lr_min_ratio={s.lr_min_ratio}: must be >= 0")
    p.need(0 <= s.label_smoothing < 1, f"schedule.label_smoothing={s.label_smoothing}: must be in [0, 1)")
    p.need(s.grad_clip >= 0, f"schedule.grad_clip={s.grad_clip}: must be >= 0 (0 = off)")
    p.need(0 <= s.token_mask < 1, f"schedule.token_mask={s.token_mask}: must be in [0, 1)")
    p.need(0 <= data.max_missing <= 1, f"data.max_missing={data.max_missing}: must be a fraction in [0, 1]")
    # 0 only for a method that trains nothing (zeroshot's default)
    p.need(opts.lr > 0 or opts.lr == _default_option(type(opts), "lr") == 0, f"{job.method}.lr={opts.lr}: must be > 0")
    p.need(opts.weight_decay >= 0, f"{job.method}.weight_decay={opts.weight_decay}: must be >= 0")
    averaged = None if job.checkpoint else _averaged_epochs(job)  # `harness eval` averages nothing
    if averaged is not None:
        p.need(s.select != "best", f"{job.method} evaluates weights averaged over epochs {averaged}: "
                                   "schedule.select=best contradicts it; use schedule.select=last")
        p.need(bool(averaged.epochs(s.epochs)) or s.epochs < 1,
               f"{job.method} averages the weights of epochs {averaged}, none of the schedule.epochs={s.epochs} "
               "trained: train longer or change its averaged epochs (`harness ls methods` shows the option)")
    return p.lines


def backbone_problems(job: JobSpec) -> list[str]:
    """The job's method cannot run on its backbone's token layout (one line: the method's own
    refusal), or token masking is asked where it cannot apply; known before any model is built."""
    cls = get_method(job.method).model_cls
    layout = backbone_token_layout(job.backbone)
    p = Problems()
    p.attempt(lambda: cls.check_token_layout(layout))
    mask = job.schedule.token_mask
    if mask:
        p.need(layout == "joint", f"schedule.token_mask={mask}: token masking needs a joint space-time backbone "
                                  f"(ViCLIP-B-16, harness-tiny-joint); --backbone {job.backbone} encodes frames one by one")
        p.need(cls.allows_token_mask, f"schedule.token_mask={mask}: {job.method} regroups the patch tokens by frame and "
                                      "position and cannot train on a masked sequence; leave schedule.token_mask=0")
    return p.lines


def _averaged_epochs(job: JobSpec) -> Any:
    """The epochs whose weights the job's method averages (its `averaged_epochs` declaration)."""
    return get_method(job.method).model_cls.averaged_epochs(job.method_options)


def _default_option(config_cls: type, name: str) -> Any:
    """The default of option `name` of a configuration class (no configuration built)."""
    return next(field_default(f) for f in dataclasses.fields(config_cls) if f.name == name)


def _max_frames(method: str) -> int:
    """The method contract's `max_frames` (methods/base.py), read from its class: no model built."""
    return int(get_method(method).model_cls.max_frames)


def check_frames(problems: Problems, methods: list[str], frames: int | None, option: str = "--frames") -> None:
    """`frames` within every method's `max_frames` (commands that build models without jobs:
    params, bench)."""
    if frames is None or frames < 1:
        return
    for method in methods:
        limit = _max_frames(method)
        problems.need(frames <= limit, f"{option} {frames}: {method} runs at most {limit} frames per clip "
                                       "(its `max_frames`); use fewer frames")


def _normalised(name: str) -> str:
    """A class name as its prompt reads: case, underscores and repeated spaces do not matter."""
    return " ".join(name.replace("_", " ").split()).casefold()


def unseen_eval_lists(job: JobSpec) -> list[ListSpec]:
    """The job's evaluation lists whose classes its training must not have seen: those indexing
    the partner of the training classes' role in `DISJOINT_CLASS_ROLES` (base-to-novel: novel)."""
    from protocols import (
        load_protocol,  # PyYAML: this module is on the bare GPU host's path (docs/architecture.md)
    )

    if job.train is None:
        return []
    protocol = load_protocol(job.protocol)
    partner = dict(DISJOINT_CLASS_ROLES).get(protocol["train"]["classes"])
    roles = {ev["name"]: ev["classes"] for ev in protocol.get("evaluate", [])}
    return [lst for lst in job.evals if partner and roles.get(lst.name.split("@")[0]) == partner]


def class_set_problems(job: JobSpec) -> list[str]:
    """A class of an unseen (novel) class file that is also a training (base) class, one line per
    shared class naming both files: the novel accuracy would measure seen classes."""
    lines = []
    for lst in unseen_eval_lists(job):
        base = {_normalised(name): (i, name) for i, name in enumerate(job.train.classnames)}
        for j, name in enumerate(lst.classnames):
            if _normalised(name) in base:
                i, base_name = base[_normalised(name)]
                lines.append(f"{lst.class_file}: class {name!r} (id {j}) is also a base class ({job.train.class_file}, "
                             f"id {i}: {base_name!r}); base and novel classes must be disjoint: remove it from one "
                             "of the files")
    return lines


def check_jobs(jobs: list[JobSpec], problems: Problems) -> None:
    """Option problems of every job, class sets that overlap, and jobs that repeat (a value
    given twice in a sweep)."""
    seen: dict[str, Any] = {}
    for job in jobs:
        problems.lines.extend(job_option_problems(job))
        problems.lines.extend(class_set_problems(job))
        problems.lines.extend(backbone_problems(job))
        if job.job_id in seen:
            problems.lines.append(f"job {job.job_id} appears twice: a value repeats in --methods or --sweep")
        seen[job.job_id] = job


class DataCheck:
    """The cheap up-front data check of a run's jobs; lists shared by several jobs are read once."""

    def __init__(self, cache_dir: str | None) -> None:
        self.probes = ProbeCache(cache_dir)
        self.lists: dict[tuple, str | None] = {}

    def problem(self, job: JobSpec) -> str | None:
        """None if every list, video and description file the job reads looks usable."""
        for lst in [job.train, *job.evals]:
            if lst is None:
                continue
            key = (lst.ann_file, len(lst.classnames), lst.video_root, lst.modality, lst.class_file,
                   job.data.on_missing, job.data.max_missing)
            if key not in self.lists:
                self.lists[key] = self._list_problem(lst, job.data)
            if self.lists[key]:
                return self.lists[key]
        return self._unseen_problem(job) or self._descriptions_problem(job) or self._rephrased_problem(job)

    def _unseen_problem(self, job: JobSpec) -> str | None:
        """A training video listed again in an unseen-class (novel) list: its class was trained on."""
        for lst in unseen_eval_lists(job):
            key = ("unseen", job.train.ann_file, lst.ann_file)
            if key not in self.lists:
                train = {e.path: e for e in read_annotation_list(job.train.ann_file, len(job.train.classnames),
                                                                 job.train.modality)}
                self.lists[key] = None
                for entry in read_annotation_list(lst.ann_file, len(lst.classnames), lst.modality):
                    seen = train.get(entry.path)
                    if seen is not None:
                        self.lists[key] = (
                            f"{lst.ann_file}:{entry.line}: video {entry.path} of novel class "
                            f"{lst.classnames[entry.label]!r} is also in the training list {job.train.ann_file}:"
                            f"{seen.line} (as {job.train.classnames[seen.label]!r}); novel classes must be unseen "
                            "in training: remove it from one of the lists")
                        break
            if self.lists[key]:
                return self.lists[key]
        return None

    def _list_problem(self, lst: ListSpec, data: DataOptions) -> str | None:
        root = Path(lst.video_root)
        log = logging.getLogger("harness.data.pipeline")
        level = log.level
        log.setLevel(logging.ERROR)  # the skip notice is printed when the job builds its dataset
        try:
            present, _ = usable_entries(lst.ann_file, root, len(lst.classnames), lst.modality,
                                        data.on_missing, data.max_missing, lst.class_file)
        except HarnessError as err:
            return str(err)
        finally:
            log.setLevel(level)
        if lst.modality != "video":
            return None
        bad = [(e, why) for e in present if (why := self.probes.check(root / e.path))]
        self.probes.save()
        if not bad:
            return None
        shown = "; ".join(f"{e.path} (line {e.line}): {why}" for e, why in bad[:5])
        more = f"; and {len(bad) - 5} more (`harness data check` lists them all)" if len(bad) > 5 else ""
        return (f"{len(bad)} of {len(present)} videos listed in {lst.ann_file} are not readable videos: {shown}{more}. "
                "Replace those files or remove their lines from the list")

    @staticmethod
    def _descriptions_problem(job: JobSpec) -> str | None:
        """The descriptions the job's method will ask for (`run_needs` / `descriptions_per_class`,
        class methods of its configuration: no model is built), loaded and checked per class: the
        training classes', and each evaluation list's for "scored_descriptions"."""
        model_cls = get_method(job.method).model_cls
        config = job.method_options
        if job.descriptions is None or not model_cls.run_needs(config) & DESCRIPTION_NEEDS:
            return None  # no descriptions at all: the engine says so when the job starts
        n = model_cls.descriptions_per_class(config)
        try:
            for ref in [job.descriptions, *job.descriptions.get("evals", {}).values()]:
                load_job_descriptions(ref, n, job.cache_dir, job.splits_root)
        except HarnessError as err:
            return str(err)
        return None


    @staticmethod
    def _rephrased_problem(job: JobSpec) -> str | None:
        """The rephrased class names of every list the job scores, when its method needs them
        (FROSTER): fetched, verified and matched to the class names before any training."""
        if "rephrased_classnames" not in get_method(job.method).model_cls.run_needs(job.method_options):
            return None
        try:
            for lst in [job.train, *job.evals]:
                if lst is not None:
                    load_rephrased(lst.dataset, lst.classnames, job.cache_dir, job.splits_root)
        except HarnessError as err:
            return str(err)
        return None


def record_bad_data(store: RunStore, job: JobSpec, problem: str, write: bool = True) -> None:
    """Record (error.json) a job whose data is unusable, as failed and not started; one line on stderr."""
    where = _record_failure(store, job, HarnessError(problem)) if write else store.job_dir(job) / "error.json"
    print(f"job {job.job_id} not run: {problem} (recorded in {where})", file=sys.stderr)


def _record_failure(store: RunStore, job: JobSpec, err: HarnessError) -> Path | str:
    """error.json under the job's lock (harness/locks.py: one writer per job); a job another live
    run holds is left to that run, which meets the same data."""
    lock = FileLock(store.job_lock_path(job))
    if not lock.acquire():
        return f"not recorded: another run holds {lock.path}"
    try:
        return store.fail_job(job, err)
    finally:
        lock.release()
