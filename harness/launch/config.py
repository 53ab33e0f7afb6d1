"""Launcher options (`--launcher slurm`): from a YAML file (`--launcher-config`), then the
command line (`--partition`, `--time`, ..., `--launcher-set key=value`), checked together.

Why a dataclass of its own: the same options drive `harness run`, `eval` and `reproduce`, are
written into every submission record, and must be refused with one line naming the option (or
the file and key) before anything is submitted.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

EXECUTORS = ("slurm", "local")
INSTALL_HINT = ("--launcher slurm needs submitit: pip install 'submitit==1.5.4' "
                "(or pip install -e '.[slurm]' in the harness checkout)")


@dataclass
class LauncherConfig:
    """One SLURM task per harness job; every field is a YAML key and `--launcher-set` key."""

    executor: str = field(default="slurm", metadata={"help": "slurm (sbatch) | local (submitit's local executor: "
                                                             "each job a subprocess here; for tests)"})
    partition: str | None = field(default=None, metadata={"help": "SLURM partition (-p)"})
    account: str | None = field(default=None, metadata={"help": "SLURM account (-A)"})
    qos: str | None = field(default=None, metadata={"help": "SLURM quality of service"})
    time: str = field(default="24:00:00", metadata={"help": "time limit per job: minutes or [D-]HH:MM[:SS]"})
    gpus_per_job: int = field(default=1, metadata={"help": "GPUs per job (one node); >1 runs torchrun inside the task"})
    cpus_per_job: int | None = field(default=None, metadata={"help": "CPUs per job (default 8 per GPU, at least 4): "
                                                                     "data loading needs them"})
    mem_per_job: str | None = field(default=None, metadata={"help": "memory per job, e.g. 64G (GB if a bare number)"})
    constraint: str | None = field(default=None, metadata={"help": "SLURM --constraint, e.g. a100|h100"})
    sbatch: list[str] = field(default_factory=list, metadata={"help": "extra sbatch options, one per item: "
                                                                      "'--exclusive', '--mail-type=END'"})
    setup: list[str] = field(default_factory=list, metadata={"help": "shell lines run in the job before the task "
                                                                     "(module load ..., source venv/bin/activate)"})
    array_parallelism: int = field(default=32, metadata={"help": "at most this many jobs of a submission run at "
                                                                  "once (SLURM array %N)"})
    processes_per_job: int | None = field(default=None, metadata={"help": "torchrun processes per job (default: "
                                                                          "gpus_per_job, at least 1)"})
    signal: str = field(default="USR2", metadata={"help": "signal SLURM sends before the time limit (submitit's)"})
    signal_delay_s: int = field(default=120, metadata={"help": "seconds before the time limit the signal comes"})
    max_timeouts: int = field(default=3, metadata={"help": "requeues after a time limit before the job is given up "
                                                           "(preemptions do not count)"})
    job_name: str = field(default="harness", metadata={"help": "SLURM job name"})
    folder: str | None = field(default=None, metadata={"help": "submitit folder (scripts, pickles, logs); default "
                                                               "<results>/slurm"})
    python: str | None = field(default=None, metadata={"help": "python command in the job (default: this "
                                                               "interpreter)"})
    poll_s: float = field(default=30.0, metadata={"help": "--wait: seconds between state checks"})

    @property
    def minutes(self) -> int:
        return parse_minutes(self.time)

    @property
    def processes(self) -> int:
        return self.processes_per_job if self.processes_per_job else max(1, self.gpus_per_job)

    @property
    def cpus(self) -> int:
        return self.cpus_per_job if self.cpus_per_job else max(4, 8 * self.gpus_per_job)

    @property
    def mem_gb(self) -> float | None:
        return parse_gigabytes(self.mem_per_job) if self.mem_per_job else None

    @property
    def grace_s(self) -> float:
        """How long a stop may take after the signal before the task kills the job's processes
        and requeues from the last checkpoint (leaves SLURM time to requeue)."""
        return max(10.0, self.signal_delay_s - 30.0)

    def sbatch_parameters(self) -> dict[str, Any]:
        """`--sbatch` items as submitit's `additional_parameters` ({'mail-type': 'END', 'exclusive': True})."""
        out: dict[str, Any] = {}
        for item in self.sbatch:
            text = item.strip().removeprefix("#SBATCH").strip()
            if not text.startswith("--") or len(text) < 3:
                raise HarnessError(f"launcher sbatch item {item!r}: expected a long sbatch option, e.g. --exclusive "
                                   "or --mail-type=END")
            key, sep, value = text[2:].partition("=")
            out[key] = value if sep else True
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_minutes(text: str | int) -> int:
    """'90' / 90 -> 90; 'HH:MM[:SS]' and 'D-HH[:MM[:SS]]' as sbatch reads them, rounded up."""
    if isinstance(text, int):
        minutes = text
    else:
        value = str(text).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
        if not match:
            raise HarnessError(f"launcher time {text!r}: expected minutes or [D-]HH:MM[:SS], e.g. 12:00:00")
        days, a, b, c = (int(g) if g is not None else None for g in match.groups())
        if days is None and b is None:
            minutes = a
        else:
            hours, mins, secs = a, b or 0, c or 0
            minutes = (days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes < 1:
        raise HarnessError(f"launcher time {text!r}: must be at least one minute")
    return minutes


def parse_gigabytes(text: str | int | float) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([MGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise HarnessError(f"launcher mem_per_job {text!r}: expected e.g. 64G, 512M or a number of GB")
    value, unit = float(match.group(1)), match.group(2).upper()
    return value / 1024 if unit == "M" else value * 1024 if unit == "T" else value


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(LauncherConfig)}


def _coerce(name: str, value: Any, where: str) -> Any:
    kind = _fields()[name].type
    if value is None:
        return None
    if "list" in str(kind):
        items = value if isinstance(value, list) else [value]
        return [str(v) for v in items]
    if "int" in str(kind) and "float" not in str(kind):
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                return int(str(value))
            except ValueError:
                raise HarnessError(f"{where}: {name} must be an integer, got {value!r}") from None
        return value
    if "float" in str(kind):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise HarnessError(f"{where}: {name} must be a number, got {value!r}") from None
    return str(value)


def load_launcher_config(path: str | Path | None, overrides: dict[str, Any] | None = None,
                         sets: list[str] | None = None) -> LauncherConfig:
    """The YAML file's keys, then `overrides` (command-line options that were given), then
    `--launcher-set key=value` items; every problem listed together, one line each."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    known = _fields()
    if path is not None:
        file = Path(path)
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except OSError as err:
            raise HarnessError(f"--launcher-config {file}: cannot read it ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            raise HarnessError(f"--launcher-config {file}: not YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise HarnessError(f"--launcher-config {file}: expected a mapping of launcher options")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in known:
                problems.append(f"{file}: unknown launcher option {key!r}; valid: {', '.join(known)}")
                continue
            try:
                values[name] = _coerce(name, value, str(file))
            except HarnessError as err:
                problems.append(str(err))
    for name, value in (overrides or {}).items():
        if value is not None and value != []:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    for item in sets or []:
        key, sep, value = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or name not in known:
            problems.append(f"--launcher-set {item!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
            continue
        try:
            values[name] = _coerce(name, yaml.safe_load(value) if value else value, "--launcher-set")
        except HarnessError as err:
            problems.append(str(err))
    config = LauncherConfig(**values)
    problems.extend(check_config(config))
    if problems:
        raise HarnessError("\n".join(problems))
    return config


def check_config(config: LauncherConfig) -> list[str]:
    """Values out of range, one line each."""
    out = []
    if config.executor not in EXECUTORS:
        out.append(f"launcher executor {config.executor!r}: one of {', '.join(EXECUTORS)}")
    for name in ("gpus_per_job", "signal_delay_s", "max_timeouts"):
        if getattr(config, name) < 0:
            out.append(f"launcher {name} must be >= 0, got {getattr(config, name)}")
    for name in ("array_parallelism", "cpus_per_job", "processes_per_job"):
        value = getattr(config, name)
        if value is not None and value < 1:
            out.append(f"launcher {name} must be >= 1, got {value}")
    if config.poll_s <= 0:
        out.append(f"launcher poll_s must be > 0, got {config.poll_s}")
    for check in (lambda: parse_minutes(config.time), config.sbatch_parameters,
                  lambda: config.mem_per_job and parse_gigabytes(config.mem_per_job)):
        try:
            check()
        except HarnessError as err:
            out.append(str(err))
    from harness.preemption import signal_number

    try:
        signal_number(config.signal)
    except ValueError as err:
        out.append(f"launcher signal: {err}")
    return out


def config_help() -> list[tuple[str, Any, str]]:
    """(key, default, help) of every launcher option (docs, `--help`)."""
    out = []
    for f in dataclasses.fields(LauncherConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", "")))
    return out
