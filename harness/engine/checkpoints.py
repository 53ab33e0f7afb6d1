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
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook

from harness.atomic import atomic_write, atomic_write_text
from harness.errors import HarnessError
from harness.faults import fault_point

POINTER = "last_checkpoint"
BEST_FILE = "harness/best_file"
BEST_SCORE = "harness/best_score"
_EPOCH = re.compile(r"^epoch_(\d+)\.pth$")


def _load(path: Path) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or not {"meta", "state_dict"} <= checkpoint.keys():
        raise ValueError("not a harness checkpoint")
    return checkpoint


def _best_file_of(checkpoint: dict[str, Any]) -> str | None:
    return checkpoint.get("message_hub", {}).get("runtime_info", {}).get(BEST_FILE)


def _epoch_files(work_dir: Path) -> list[Path]:
    """epoch_<n>.pth files, newest first."""
    files = [p for p in work_dir.glob("epoch_*.pth") if _EPOCH.match(p.name)]
    return sorted(files, key=lambda p: int(_EPOCH.match(p.name).group(1)), reverse=True)


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
    for path in [*work_dir.glob("epoch_*.pth"), *work_dir.glob("best_*.pth")]:
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

    def _write(self, runner, name: str, epoch: int, full: bool) -> None:
        meta = dict(epoch=epoch, iter=runner.iter)
        atomic_write(self.work_dir / name, lambda tmp: runner.save_checkpoint(
            str(tmp.parent), tmp.name, save_optimizer=full, save_param_scheduler=full, meta=meta, by_epoch=False))

    def _save_last(self, runner, epoch: int) -> None:
        if runner.rank != 0:
            return
        name = f"epoch_{epoch}.pth"
        self._write(runner, name, epoch, full=True)
        fault_point("ckpt.before_pointer")
        atomic_write_text(self.work_dir / POINTER, name)
        fault_point("ckpt.before_remove")
        _remove_spares(self.work_dir, keep={name, runner.message_hub.get_info(BEST_FILE)})

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

    # -- resuming -------------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._training or self._trained:  # loading the best file for evaluation, not resuming
            return
        meta = checkpoint.get("meta", {})
        self._pending = meta
        self.resumed = {"epoch": meta.get("epoch"), "iter": meta.get("iter"),
                        "exact": "harness_rng" in meta}

    def _restore(self, runner, meta: dict[str, Any]) -> None:
        if "harness_rng" in meta:
            _set_rng_state(meta["harness_rng"])

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
    runner.load_checkpoint(str(path), map_location="cpu", strict=False)
    return path.name
