"""mmengine hooks of this project: adapter-sized checkpoints and a per-job progress bar."""
from __future__ import annotations

import math
import sys
from typing import Any

import torch
from mmengine.hooks import Hook
from tqdm import tqdm

from harness.engine.accounting import StepTimes, batch_size
from harness.errors import HarnessError


class TrainableCheckpointHook(Hook):
    """Checkpoints keep only the trainable parameters (+ optimiser/scheduler state, which mmengine
    adds) and the backbone's identity, so an adapter job's checkpoint is megabytes, not a copy
    of CLIP. Resuming checks the backbone identity and refuses a different one."""

    priority = "VERY_LOW"

    def __init__(self, backbone: dict[str, Any]) -> None:
        self.backbone = backbone

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        keep = model.trainable_state_names()
        state = checkpoint["state_dict"]
        for key in [k for k in state if k not in keep]:
            del state[key]
        checkpoint.setdefault("meta", {})["backbone"] = self.backbone

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._complete_state(runner, checkpoint)
        saved = checkpoint.get("meta", {}).get("backbone")
        if saved is None:
            return
        mine = {k: self.backbone.get(k) for k in ("resolved_name", "pretrained", "weights_sha256")}
        theirs = {k: saved.get(k) for k in ("resolved_name", "pretrained", "weights_sha256")}
        if mine != theirs:
            raise HarnessError(f"checkpoint was trained on backbone {theirs}, this job uses {mine}; "
                               "delete the job's work/ folder or use another --out")


    @staticmethod
    def _complete_state(runner, checkpoint: dict) -> None:
        """Give the frozen weights their current (identical: same backbone, same seed) values, so
        mmengine loads a complete state dict instead of warning that every frozen key is missing;
        a trainable parameter the checkpoint lacks is reported in one line (it was not restored)."""
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        state = checkpoint["state_dict"]
        lacking = sorted(model.trainable_state_names() - state.keys())
        if lacking:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            print(f"harness: warning: checkpoint lacks {len(lacking)} trainable tensor(s) ({shown}); "
                  "they keep their initial values", file=sys.stderr)
        frozen = {k: v for k, v in model.state_dict().items() if k not in state and k not in lacking}
        state.update(frozen)


class ProgressBarHook(Hook):
    """One tqdm bar per job over its optimiser steps, with the running loss."""

    priority = "LOW"

    def __init__(self, description: str, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled
        self.bar: Any | None = None

    def before_train(self, runner) -> None:
        if not self.enabled or runner.rank != 0:
            return

        # In a log file (no TTY) a redraw per step is noise: update about every 10%.
        every = 0.1 if sys.stderr.isatty() else 30.0
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc=self.description, unit="it",
                        dynamic_ncols=True, leave=True, mininterval=every)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if outputs:
            # detach: float() of a tensor that requires grad warns (torch UserWarning) on every step
            self.bar.set_postfix({k: f"{float(v.detach() if hasattr(v, 'detach') else v):.3f}"
                                  for k, v in outputs.items() if "loss" in k}, refresh=False)

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NonFiniteLossHook(Hook):
    """Fail the job at the first NaN/inf training loss: a diverged run must end as a failed
    job with a clear reason, never be evaluated and stored as a result (with NaN scores)."""

    priority = "HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for key, value in (outputs or {}).items():
            value = value.detach() if hasattr(value, "detach") else value
            if "loss" in key and not math.isfinite(float(value)):
                raise HarnessError(f"non-finite training loss ({key}={float(value)}) at iteration {runner.iter + 1} "
                                   f"(epoch {runner.epoch + 1}): training diverged; lower the learning rate "
                                   "(<method>.lr) or enable schedule.grad_clip")


class GlobalBatchEpochHook(Hook):
    """Tells the training loader's `GlobalBatchSampler` which epoch starts (its shuffling order
    and per-sample seeds derive from it); mmengine's DistSamplerSeedHook looks for a sampler."""

    priority = "NORMAL"

    def before_train_epoch(self, runner) -> None:
        runner.train_loop.dataloader.batch_sampler.set_epoch(runner.epoch)


class StepTimerHook(Hook):
    """Training throughput and data wait (`harness.engine.accounting`): sums IterTimerHook's
    per-step `train/data_time` and `train/time` from the message hub, and the clips per step
    (the whole update's, over every process)."""

    priority = "BELOW_NORMAL"  # after IterTimerHook (NORMAL) has written this step's times

    def __init__(self) -> None:
        self.times = StepTimes()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hub = runner.message_hub
        share = data_batch.get("update") if isinstance(data_batch, dict) else None
        clips = share.global_size if share is not None else batch_size(data_batch)
        self.times.add(float(hub.get_scalar("train/time").current()),
                       float(hub.get_scalar("train/data_time").current()), clips)

    def summary(self) -> dict:
        """This process's step times; the clips of every update, all processes together."""
        return self.times.summary()


class EpochAverageHook(Hook):
    """Evaluate the mean of the trainable weights over a range of epochs instead of the last
    epoch's weights (FROSTER's `weight_average_tool.py`, which its published numbers use).

    Keeps a float64 running sum (on the CPU) of every trainable tensor after each epoch in the
    range (and, for epoch 0, before training starts); at the end of training the model takes the
    mean. The sum and count travel in each checkpoint (`meta`), so a resumed job averages exactly
    the epochs an uninterrupted one would. Frozen tensors do not change, so averaging the
    trainable ones averages the whole model, as the official tool does.
    """

    priority = "LOW"  # after the optimiser's last step of the epoch, before SafeCheckpointHook saves it
    META_KEY = "harness_epoch_average"

    def __init__(self, epochs: Any) -> None:
        """`epochs`: a `methods.base.EpochRange` (first..last, 1-based; 0 = the initial weights)."""
        self.range = epochs
        self.sum: dict[str, Any] | None = None
        self.averaged: list[int] = []

    @staticmethod
    def _trainable(runner) -> dict[str, Any]:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def _add(self, runner, epoch: int) -> None:
        params = self._trainable(runner)
        if self.sum is None:
            self.sum = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in params.items()}
        for name, param in params.items():
            self.sum[name] += param.detach().to("cpu", torch.float64)
        self.averaged.append(epoch)

    def before_train(self, runner) -> None:
        if self.range.first == 0 and runner.epoch == 0 and not self.averaged:
            self._add(runner, 0)

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        if epoch >= max(1, self.range.first) and (self.range.last is None or epoch <= self.range.last):
            self._add(runner, epoch)

    def after_train(self, runner) -> None:
        if not self.averaged:
            raise HarnessError(f"weight averaging over epochs {self.range}: none of the {runner.max_epochs} trained "
                               f"epochs is in that range; change the method's averaged epochs (e.g. 'none')")
        count = len(self.averaged)
        with torch.no_grad():
            for name, param in self._trainable(runner).items():
                param.copy_((self.sum[name] / count).to(param.dtype))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})[self.META_KEY] = {"epochs": list(self.averaged), "sum": self.sum}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("meta", {}).get(self.META_KEY)
        if saved is not None and not self.averaged:  # resuming; a later best-file load changes nothing
            self.averaged, self.sum = list(saved["epochs"]), saved["sum"]

    def record(self) -> dict[str, Any]:
        """What the job's metrics say about the evaluated weights."""
        return {"range": str(self.range), "epochs": list(self.averaged)}
