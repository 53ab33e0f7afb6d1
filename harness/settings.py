"""Run settings: the shared training schedule (`schedule.*`), data options (`data.*`) and the
`--set` grammar that overrides them and method options (`<method>.<option>`).

| key                     | meaning                                                        |
|-------------------------|----------------------------------------------------------------|
| `<method>.<option>`     | a method option (`harness ls` lists them); method must be in the run |
| `schedule.<key>`        | a field of `Schedule` below                                    |
| `data.<key>`            | a field of `DataOptions` below                                 |

Values are parsed as YAML scalars (`1e-3`, `true`, `[4, 3]`, `best`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.errors import HarnessError, unknown_name_error


def _opt(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


#: mmengine visualizer backends `--set log.backend=` accepts, and the package each needs.
LOG_BACKENDS = ("local", "tensorboard", "wandb", "mlflow")
_LOG_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def log_setting(name: str, value: Any) -> str:
    """`--set log.backend=X` -> the schedule key it sets (`log_backend`), after checking the
    backend exists and its optional package is installed (so a run does not fail per job)."""
    import importlib.util

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
    batch_size: int = _opt(32, "global batch size (kept with gradient accumulation)")
    micro_batch: int = _opt(0, "clips per forward pass per process; 0 = batch_size / world size")
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
    descriptions: str = _opt("etl4video", "description source for msta: etl4video or ost",
                             choices=("etl4video", "ost"))
    color_jitter: bool = _opt(False, "colour jitter p0.8 + grayscale p0.2 in training (MSTA runs)")
    train_augment: bool = _opt(True, "random crop/flip in training; false = the deterministic test transform "
                               "(exact 1-vs-N-process comparisons)")
    decoder: str = _opt("auto", "video decode path, all exact (same frames as decord): auto (prepared frames "
                        "where `harness data prepare` ran, else decord), decord, pyav, frames, gpu (torchcodec "
                        "CUDA extra)", choices=("auto", "decord", "pyav", "frames", "gpu"))
    decode_threads: int = _opt(1, "decoder threads per DataLoader worker (exact; helps wall time, not CPU time)")


def parse_value(text: str) -> Any:
    """YAML scalar, except that `1e-3` is a number (YAML 1.1 would read it as a string)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_set_args(items: list[str], methods: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """`--set` items -> (method options per method, schedule overrides, data overrides)."""
    method_opts: dict[str, dict[str, Any]] = {}
    schedule: dict[str, Any] = {}
    data: dict[str, Any] = {}
    valid_schedule = {f.name for f in dataclasses.fields(Schedule)}
    valid_data = {f.name for f in dataclasses.fields(DataOptions)}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise HarnessError(f"--set {item!r}: expected <method>.<option>=value, schedule.<key>=value, data.<key>=value or log.backend=value")
        key, raw = item.split("=", 1)
        scope, name = key.split(".", 1)
        value = parse_value(raw)
        if scope == "log":
            scope, name = "schedule", log_setting(name, value)
        if scope == "schedule":
            if name not in valid_schedule:
                raise unknown_name_error("schedule key", name, valid_schedule)
            schedule[name] = value
        elif scope == "data":
            if name not in valid_data:
                raise unknown_name_error("data key", name, valid_data)
            data[name] = value
        else:
            from methods.registry import get_method, make_config

            get_method(scope)  # unknown method name -> error with suggestions
            if scope not in methods:
                raise HarnessError(f"--set {item!r}: method {scope!r} is not in this run (--methods {','.join(methods)})")
            method_opts.setdefault(scope, {})[name] = value
            make_config(scope, method_opts[scope])  # validate now, before any job starts
    return method_opts, schedule, data


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a settings dataclass from merged values, type-checking each."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise unknown_name_error(f"{where} key", key, fields)
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise HarnessError(f"{where}.{key}={value!r}: expected true/false")
        if f.metadata.get("number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HarnessError(f"{where}.{key}={value!r}: expected a number")
            value = int(value) if float(value).is_integer() else float(value)
        elif isinstance(default, int) and not isinstance(default, bool) and (isinstance(value, bool) or not isinstance(value, int)):
            raise HarnessError(f"{where}.{key}={value!r}: expected an integer")
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HarnessError(f"{where}.{key}={value!r}: expected a number")
            value = float(value)
        if isinstance(default, list) and not isinstance(value, list):
            raise HarnessError(f"{where}.{key}={value!r}: expected a list like [4, 3]")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise HarnessError(f"{where}.{key}={value!r}: must be one of {', '.join(choices)}")
        out[key] = value
    return cls(**out)


def settings_help() -> list[tuple[str, Any, str]]:
    rows = []
    for prefix, cls in (("schedule", Schedule), ("data", DataOptions)):
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f"{prefix}.{f.name}", default, f.metadata.get("help", "")))
    return rows


def resolve_schedule(protocol: dict[str, Any], profile: dict[str, Any] | None, method: str,
                     recipe: dict[str, Any], overrides: dict[str, Any], dataset: str) -> Schedule:
    """protocol schedule < protocol test views for the dataset < the method's recipe schedule
    (non-empty only with --schedule paper; harness.recipes) < profile < --set schedule.*"""
    from protocols import test_views

    values: dict[str, Any] = dict(protocol.get("schedule", {}))
    values["views"] = test_views(protocol, dataset)
    values.update(recipe)
    if profile:
        values.update(profile.get("schedule", {}))
    values.update(overrides)
    return build_dataclass(Schedule, values, "schedule")
