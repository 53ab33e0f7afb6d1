"""Run settings: the shared training schedule (`schedule.*`), data options (`data.*`) and the
`--set` grammar that overrides them and method options (`<method>.<option>`).

| key                     | meaning                                                        |
|-------------------------|----------------------------------------------------------------|
| `<method>.<option>`     | a method option (`harness ls` lists them); method must be in the run |
| `schedule.<key>`        | a field of `Schedule` below                                    |
| `data.<key>`            | a field of `DataOptions` below                                 |

Values are parsed as YAML scalars (`1e-3`, `true`, `[4, 3]`, `best`) and checked against the
option's default; both rules (`parse_value`, `build_dataclass`) live in `harness.options` and are
shared with method options and the bench.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError, unknown_name_error
from harness.options import build_dataclass, check_option, option, options_help, parse_value, split_assignment
from methods.registry import get_method

__all__ = ["DataOptions", "Overrides", "Schedule", "Setting", "build_dataclass", "parse_method_sets",
           "parse_set_args", "parse_setting", "parse_value", "settings_help"]
_opt = option  # the one option helper (harness.options), short for the tables below


#: mmengine visualizer backends `--set log.backend=` accepts, and the package each needs.
LOG_BACKENDS = ("local", "tensorboard", "wandb", "mlflow")
_LOG_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def log_setting(name: str, value: Any) -> str:
    """`--set log.backend=X` -> the schedule key it sets (`log_backend`), after checking the
    backend exists and its optional package is installed (so a run does not fail per job)."""
    if name != "backend":
        raise HarnessError(f"--set log.{name}: unknown log setting (only log.backend)")
    if value not in LOG_BACKENDS:
        raise HarnessError(f"--set log.backend={value}: choose one of {', '.join(LOG_BACKENDS)}")
    package = _LOG_PACKAGES.get(value)
    if package and importlib.util.find_spec(package) is None:
        raise HarnessError(f"--set log.backend={value} needs the {package} package: pip install 'harness[{value}]'")
    return "log_backend"


@dataclass
class Schedule:
    """Shared by every method of a protocol (the protocol's YAML sets the defaults)."""

    epochs: int = _opt(50, "training epochs")
    warmup_epochs: int = _opt(5, "linear warm-up epochs (then cosine to lr * lr_min_ratio); may be fractional "
                              "(AIM warms up 2.5 epochs)", number=True)
    batch_size: int = _opt(32, "global batch: clips per optimiser update over all processes and micro-batches "
                           "(an epoch's last update takes the remainder)")
    micro_batch: int = _opt(0, "clips per forward pass per process (execution only: the same result for any "
                            "value); 0 = the process's whole share, ceil(batch_size / processes)")
    frames: int = _opt(8, "frames per clip (segment-based sampling)")
    views: list = _opt([1, 1], "test views [clips, crops]; scores softmaxed then averaged")
    val_interval: int = _opt(5, "validate on the selection set every N epochs (0 = only at the end)")
    select: str = _opt("last", "model selection: last checkpoint, or best on the protocol's selection set",
                       choices=("last", "best"))
    lr_min_ratio: float = _opt(0.01, "cosine schedule ends at lr * lr_min_ratio")
    betas: list = _opt([0.9, 0.98], "AdamW betas")
    eps: float = _opt(1e-8, "AdamW eps")
    label_smoothing: float = _opt(0.0, "label smoothing of the training cross-entropy (ViFi-CLIP's recipes: 0.1)")
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA, none on CPU), bf16, none",
                    choices=("auto", "bf16", "none"))
    grad_checkpointing: bool = _opt(False, "gradient checkpointing in both towers (saves memory)")
    grad_clip: float = _opt(0.0, "clip gradients by global norm (0 = off; never with msta's rescaled grads)")
    token_mask: float = _opt(0.0, "fraction of patch tokens dropped at random in each training clip, as ViCLIP's "
                             "pretraining (0.9); joint space-time backbones and methods that allow it only; never "
                             "at evaluation; 0 = off")
    num_workers: int = _opt(-1, "data loader workers per process (-1 = auto: 8 per GPU, 0 on CPU)")
    cpu_threads: int = _opt(0, "torch threads on CPU (0 = auto: cores - 1 - workers, at least 1; "
                               "OpenMP with every core busy collapses under any other load)")
    log_backend: str = _opt("local", "where training scalars go besides the job's own JSON log (set as "
                            "log.backend=...): local only, or also tensorboard / wandb / mlflow (optional extras)",
                            choices=LOG_BACKENDS)


@dataclass
class DataOptions:
    on_missing: str = _opt("skip", "listed video missing on disk: skip (count it) or error",
                           choices=("skip", "error"))
    max_missing: float = _opt(0.05, "fraction of missing videos above which a job stops")
    descriptions: str = _opt("etl4video", "description source for msta: etl4video or ost (ost reads the files its "
                                          "own ost.descriptors option names)",
                             choices=("etl4video", "ost"))
    color_jitter: bool = _opt(False, "colour jitter p0.8 + grayscale p0.2 in training (MSTA runs)")
    train_augment: bool = _opt(True, "random crop/flip in training (drawn per clip: the same for any process "
                               "count or micro-batch); false = the deterministic test transform")
    decoder: str = _opt("auto", "video decode path, all exact (same frames as decord): auto (prepared frames "
                        "where `harness data prepare` ran, else decord), decord, pyav, frames, gpu (torchcodec "
                        "CUDA extra)", choices=("auto", "decord", "pyav", "frames", "gpu"))
    augment_on: str = _opt("cpu", "where training crop/flip/resize run: cpu (MMAction2 pipeline) or device (on the "
                           "batch, on the model's device; crops come from the centre square, so pixels change)",
                           choices=("cpu", "device"))
    decode_threads: int = _opt(1, "decoder threads per DataLoader worker (exact; helps wall time, not CPU time)")


_SCHEDULE_KEYS = frozenset(f.name for f in dataclasses.fields(Schedule))
_DATA_KEYS = frozenset(f.name for f in dataclasses.fields(DataOptions))


@dataclass(frozen=True)
class Setting:
    """One `--set` / `--sweep` item, parsed and checked once: where it goes (`schedule`, `data` or
    a method's name), the key, and the value (as parsed; checked against its option)."""

    scope: str
    name: str
    value: Any


@dataclass
class Overrides:
    """The settings of a run's `--set` items (and of one sweep point), by where they go."""

    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Iterable[Setting]) -> Overrides:
        """Later settings of the same key win (as later `--set` items do)."""
        out = cls()
        for one in settings:
            if one.scope == "schedule":
                out.schedule[one.name] = one.value
            elif one.scope == "data":
                out.data[one.name] = one.value
            else:
                out.method_options.setdefault(one.scope, {})[one.name] = one.value
        return out

    def as_tuple(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
        return self.method_options, self.schedule, self.data


def parse_setting(item: str, methods: list[str]) -> Setting:
    """One `--set` item -> a `Setting`: the key must exist (a method option: of a method in the run)
    and the value must be of its option's kind (`harness.options.check_option`); the method's
    own consistency checks (`validate()`) run when its configuration is built, once per job
    expansion (harness/jobs/expand.py)."""
    scope, name, value = split_assignment(
        item, "<method>.<option>=value, schedule.<key>=value, data.<key>=value or log.backend=value")
    if scope == "log":
        scope, name = "schedule", log_setting(name, value)
    if scope == "schedule":
        if name not in _SCHEDULE_KEYS:
            raise unknown_name_error("schedule key", name, _SCHEDULE_KEYS)
    elif scope == "data":
        if name not in _DATA_KEYS:
            raise unknown_name_error("data key", name, _DATA_KEYS)
    else:
        info = get_method(scope)  # unknown method name -> error with suggestions
        if scope not in methods:
            raise HarnessError(f"--set {item!r}: method {scope!r} is not in this run (--methods {','.join(methods)})")
        check_option(info.config_cls, name, value, scope, kind=f"option of method {scope!r}")
    return Setting(scope, name, value)


def parse_set_args(items: list[str], methods: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """`--set` items -> (method options per method, schedule overrides, data overrides), each
    item parsed once (`parse_setting`)."""
    return Overrides.of(parse_setting(item, methods) for item in items).as_tuple()


def parse_method_sets(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`--set` items that may only be method options (`harness params`, `harness bench`)."""
    method_opts, schedule, data = parse_set_args(items, methods)
    if schedule or data:
        raise HarnessError("--set: only <method>.<option>=value overrides apply here (no schedule.* / data.*)")
    return method_opts


def settings_help() -> list[tuple[str, Any, str]]:
    return [(f"{prefix}.{name}", default, text)
            for prefix, cls in (("schedule", Schedule), ("data", DataOptions))
            for name, default, text in options_help(cls)]
