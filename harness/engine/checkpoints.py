"""Crash-safe checkpoints and exact resume (replaces mmengine's CheckpointHook for training jobs).

mmengine's hook removes the previous checkpoint before writing the next one and writes in place,
so a kill in between leaves `last_checkpoint` naming a missing or truncated file. Here every file
is written to a temp name, fsynced and renamed (harness.atomic) before the pointer names it, and
only then is the previous one removed; the `best_*` file likewise. The last checkpoint is the
authority: its message hub names the current best file, so a kill between steps leaves at most a
spare file that the next save removes.

Exactness: a checkpoint is taken where the next epoch would start (after validation when one is
due), between two optimiser updates (an update never spans epochs: harness.engine.update), and
holds the torch / numpy / python RNG states; the batches, augmentations and per-sample drop path
of the next epochs follow from the job seed and the epoch (harness.engine.batches), so a resumed
job trains exactly as an uninterrupted one.

Preemption (harness/preemption.py): when a launcher task is told its allocation ends, the job
stops after the current optimiser update with a checkpoint of that boundary, `update_<n>.pth` (n
= updates done, meta `update_in_epoch`: how many of the epoch's updates are done). It holds what
an epoch checkpoint holds (weights, optimiser, scheduler, message hub, RNG states, hook states)
and the resumed job's sampler skips the epoch's finished updates (`GlobalBatchSampler
.resume_within`): the global batches and per-sample seeds are pure functions of (seed, epoch,
position), so the remaining updates are exactly those of an uninterrupted run.

Safety: a checkpoint is written as tensors and plain data only (numpy arrays and mmengine's
`HistoryBuffer`s of the message hub are stored as tagged dicts of tensors, `to_plain`), so every
reader loads it with `torch.load(weights_only=True)` (`harness.safe_load`): resume goes through
the `harness-safe://` loader registered with mmengine (`safe_uri`), never through mmengine's own
unrestricted `torch.load`. A file whose pickle would run code is refused, never executed.
"""
from __future__ import annotations

import errno
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from harness import preemption
from harness.atomic import atomic_write, atomic_write_text
from harness.errors import HarnessError
from harness.faults import fault_point
from harness.safe_load import ForeignCode, load_weights_only

POINTER = "last_checkpoint"
BEST_FILE = "harness/best_file"
BEST_SCORE = "harness/best_score"
_EPOCH = re.compile(r"^epoch_(\d+)\.pth$")
_UPDATE = re.compile(r"^update_(\d+)\.pth$")


#: Key of the tagged dicts that stand for non-tensor objects in a stored checkpoint.
TAG = "__harness_type__"
#: mmengine checkpoint-loader scheme of `load_run_checkpoint` (`safe_uri`).
SAFE_SCHEME = "harness-safe://"


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """`obj` as tensors and plain data, which `torch.load(weights_only=True)` reads: numpy arrays
    and mmengine `HistoryBuffer`s become tagged dicts (`from_plain` restores them), numpy
    scalars Python numbers. Anything else that is not plain data is an error, found when saving."""
    if isinstance(obj, np.generic):  # before the plain types: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (torch.Tensor, str, bytes, bool, int, float, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf" or obj.dtype.itemsize > 8:
            raise HarnessError(f"{where}: a numpy array of dtype {obj.dtype} cannot be stored as a tensor")
        data = obj.astype(np.int64) if obj.dtype.kind == "u" and obj.dtype.itemsize > 1 else obj
        return {TAG: "ndarray", "dtype": obj.dtype.str, "data": torch.from_numpy(np.ascontiguousarray(data).copy())}
    if isinstance(obj, HistoryBuffer):
        return {TAG: "HistoryBuffer", "max_length": int(obj.max_length),
                "log_history": to_plain(obj._log_history, where), "count_history": to_plain(obj._count_history, where)}
    if isinstance(obj, dict):
        out = {k: to_plain(v, f"{where}.{k}") for k, v in obj.items()}
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise HarnessError(f"{where}: a {type(obj).__module__}.{type(obj).__name__} cannot be stored in a weights-only "
                       "checkpoint (tensors and plain data only)")


def from_plain(obj: Any) -> Any:
    """Undo `to_plain`: tagged dicts back to numpy arrays and `HistoryBuffer`s."""
    if isinstance(obj, dict):
        kind = obj.get(TAG)
        if kind == "ndarray":
            return obj["data"].numpy().astype(np.dtype(obj["dtype"]))
        if kind == "HistoryBuffer":
            return HistoryBuffer(from_plain(obj["log_history"]), from_plain(obj["count_history"]), obj["max_length"])
        out = {k: from_plain(v) for k, v in obj.items()}
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, (list, tuple)):
        items = [from_plain(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return obj


def load_run_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint of a training job, read with `weights_only=True` (a pickle that names code is
    refused: `harness.safe_load.ForeignCode`), its tagged entries restored. A missing file is a
    FileNotFoundError (resume tells it from an unreadable one)."""
    if not Path(path).is_file():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint", str(path))
    checkpoint = load_weights_only(path, "a training checkpoint")
    if not isinstance(checkpoint, dict) or not {"meta", "state_dict"} <= checkpoint.keys():
        raise HarnessError(f"{path}: not a training checkpoint of this project (no meta / state_dict)")
    checkpoint = from_plain(checkpoint)
    if map_location not in (None, "cpu", torch.device("cpu")):
        checkpoint["state_dict"] = {k: v.to(map_location) for k, v in checkpoint["state_dict"].items()}
    return checkpoint


def _safe_loader(filename: str, map_location: Any = None) -> dict[str, Any]:
    return load_run_checkpoint(filename[len(SAFE_SCHEME):], map_location)


def safe_uri(path: str | Path) -> str:
    """`path` as a location mmengine's Runner loads (resume, `load_checkpoint`) with
    `load_run_checkpoint` instead of its own unrestricted `torch.load`."""
    CheckpointLoader.register_scheme(SAFE_SCHEME, _safe_loader, force=True)
    return SAFE_SCHEME + str(path)


def _load(path: Path) -> dict[str, Any]:
    return load_run_checkpoint(path)


def _best_file_of(checkpoint: dict[str, Any]) -> str | None:
    return checkpoint.get("message_hub", {}).get("runtime_info", {}).get(BEST_FILE)


def _epoch_files(work_dir: Path) -> list[Path]:
    """update_<n>.pth (preemption stops) then epoch_<n>.pth files, each newest first."""
    def numbered(pattern: re.Pattern[str], glob: str) -> list[Path]:
        files = [p for p in work_dir.glob(glob) if pattern.match(p.name)]
        return sorted(files, key=lambda p: int(pattern.match(p.name).group(1)), reverse=True)

    return numbered(_UPDATE, "update_*.pth") + numbered(_EPOCH, "epoch_*.pth")


def choose_resume_checkpoint(work_dir: Path, need_best: bool) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume from and notes on what was wrong on the way there.

    Tries the file `last_checkpoint` names, then the other epoch checkpoints, newest first; a
    candidate counts only if it loads (and, with `select=best`, so does the best file it names).
    With none usable the job restarts from scratch: its unusable files are removed, with a note.
    """
    if not work_dir.is_dir():
        return None, []
    pointer = work_dir / POINTER
    named = None
    if pointer.is_file():
        text = pointer.read_text().strip()
        named = work_dir / Path(text).name if text else None  # mmengine wrote absolute paths
    candidates = ([named] if named is not None else []) + [p for p in _epoch_files(work_dir) if p != named]
    notes: list[str] = []
    for path in candidates:
        try:
            checkpoint = _load(path)
            best = _best_file_of(checkpoint)
            if need_best and best is not None:
                _load(work_dir / best)
        except FileNotFoundError as err:
            notes.append(f"{err.filename and Path(err.filename).name or path.name} is missing")
            continue
        except ForeignCode as err:  # never executed: the job restarts without it
            notes.append(f"{path.name} refused: {str(err).split(': refused: ', 1)[-1].split(';')[0]}")
            continue
        except Exception as err:  # truncated / corrupt: anything torch.load can raise
            notes.append(f"{path.name} is unreadable ({type(err).__name__})")
            continue
        if notes:
            notes.append(f"resumed from {path.name} (epoch {checkpoint['meta'].get('epoch')}) instead")
        _remove_spares(work_dir, keep={path.name, best})  # a kill between save and clean-up leaves some
        return path, notes
    if candidates or pointer.exists():
        notes.append("no usable checkpoint; the job restarted from scratch")
        for path in [pointer, *_epoch_files(work_dir), *work_dir.glob("best_*.pth")]:
            path.unlink(missing_ok=True)
    return None, notes


def _remove_spares(work_dir: Path, keep: set[str | None]) -> None:
    for path in [*work_dir.glob("epoch_*.pth"), *work_dir.glob("update_*.pth"), *work_dir.glob("best_*.pth")]:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SafeCheckpointHook(Hook):
    """Save `epoch_<n>.pth` (+ `best_<key>_epoch_<n>.pth` when `best_key` improves) crash-safely
    after every epoch, and restore the full training state (RNG states) on resume. Rank 0
    writes; every rank restores its own RNG from the same checkpoint."""

    priority = "VERY_LOW"  # after the logger and scheduler hooks: save what the next epoch sees

    def __init__(self, work_dir: Path, best_key: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.best_key = best_key
        self.resumed: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None  # state read at resume, applied in before_train
        self._training = False
        self._trained = False

    # -- saving ---------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        self._training = True
        if self._pending is not None:
            self._restore(runner, self._pending)
            self._pending = None

    def after_train(self, runner) -> None:
        self._training = False
        self._trained = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point("train.iter")
        # Last hook of the update (VERY_LOW): the scheduler has stepped, the logs are written.
        if preemption.enabled() and preemption.stop_agreed(runner.world_size):
            self._stop_at_update(runner)

    def after_train_epoch(self, runner) -> None:
        if not self._val_due(runner):
            self._save_last(runner, runner.epoch + 1)

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        if not self._training:
            return
        epoch = runner.epoch  # the train loop has counted the finished epoch already
        if self.best_key is not None and metrics is not None:
            self._maybe_save_best(runner, epoch, float(metrics[self.best_key]))
        self._save_last(runner, epoch)

    @staticmethod
    def _val_due(runner) -> bool:
        """Mirrors mmengine's EpochBasedTrainLoop: when validation follows this epoch, the
        checkpoint waits for it (validation draws RNG and may change the best file)."""
        loop, done = runner.train_loop, runner.epoch + 1
        return runner.val_loop is not None and done >= loop.val_begin and (
            done % loop.val_interval == 0 or done == loop.max_epochs)

    def _write(self, runner, name: str, epoch: int, full: bool, **meta: Any) -> None:
        meta = {"epoch": epoch, "iter": runner.iter, **meta}
        atomic_write(self.work_dir / name, lambda tmp: runner.save_checkpoint(
            str(tmp.parent), tmp.name, save_optimizer=full, save_param_scheduler=full, meta=meta, by_epoch=False))

    def _save_last(self, runner, epoch: int, name: str | None = None, **meta: Any) -> None:
        if runner.rank != 0:
            return
        name = name or f"epoch_{epoch}.pth"
        self._write(runner, name, epoch, full=True, **meta)
        fault_point("ckpt.before_pointer")
        atomic_write_text(self.work_dir / POINTER, name)
        fault_point("ckpt.before_remove")
        _remove_spares(self.work_dir, keep={name, runner.message_hub.get_info(BEST_FILE)})

    def _stop_at_update(self, runner) -> None:
        """Preemption: checkpoint this update boundary (the epoch in progress, its finished
        updates), then stop the job; every process gets here after the same update."""
        done = runner.iter + 1  # the loop counts this update after the hooks
        per_epoch = runner.train_loop.dataloader.batch_sampler.updates_per_epoch
        in_epoch = done - runner.epoch * per_epoch
        self._save_last(runner, runner.epoch, name=f"update_{done}.pth", iter=done, update_in_epoch=in_epoch)
        where = f"after update {in_epoch} of {per_epoch} of epoch {runner.epoch + 1} (update {done})"
        preemption.note_boundary(where)
        raise preemption.Preempted(f"stopped {where}; checkpoint update_{done}.pth")

    def _maybe_save_best(self, runner, epoch: int, score: float) -> None:
        hub = runner.message_hub
        best = hub.get_info(BEST_SCORE)
        if best is not None and not score > best:
            return
        name = f"best_{self.best_key.replace('/', '_')}_epoch_{epoch}.pth"
        if runner.rank == 0:
            self._write(runner, name, epoch, full=False)
        hub.update_info(BEST_SCORE, score)
        hub.update_info(BEST_FILE, name)  # the last checkpoint, saved next, makes this official

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault("meta", {})
        meta["harness_rng"] = _rng_state()
        # last of the hooks (VERY_LOW, registered after TrainableCheckpointHook): weights-only from here
        checkpoint.update(to_plain(dict(checkpoint)))

    # -- resuming -------------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._training or self._trained:  # loading the best file for evaluation, not resuming
            return
        meta = checkpoint.get("meta", {})
        self._pending = meta
        self.resumed = {"epoch": meta.get("epoch"), "iter": meta.get("iter"),
                        "exact": "harness_rng" in meta}
        if "update_in_epoch" in meta:  # a preemption stop inside an epoch
            self.resumed["update_in_epoch"] = meta["update_in_epoch"]

    def _restore(self, runner, meta: dict[str, Any]) -> None:
        if "harness_rng" in meta:
            _set_rng_state(meta["harness_rng"])
        if "update_in_epoch" in meta:
            runner.train_loop.dataloader.batch_sampler.resume_within(meta["epoch"], meta["update_in_epoch"])

    def best_file(self, runner) -> Path | None:
        name = runner.message_hub.get_info(BEST_FILE)
        return None if name is None else self.work_dir / name


def load_best(runner, hook: SafeCheckpointHook) -> str:
    """Load the best checkpoint's trainable weights into the model; its file name for the record.
    `select=best` without a best checkpoint is an error, never a silent fallback to `last`."""
    path = hook.best_file(runner)
    if path is None or not path.is_file():
        raise HarnessError(f"schedule.select=best: no best checkpoint in {hook.work_dir} "
                           f"({'none recorded' if path is None else path.name + ' is missing'}); "
                           "delete that work/ folder to retrain the job")
    runner.load_checkpoint(safe_uri(path), map_location="cpu", strict=False)
    return path.name
