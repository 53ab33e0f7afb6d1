"""mmengine hooks of this project: adapter-sized checkpoints and a per-job progress bar."""
from __future__ import annotations

import sys
from typing import Any

from mmengine.hooks import Hook

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
        from tqdm import tqdm

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
        import math

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
        from harness.engine.accounting import StepTimes

        self.times = StepTimes()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from harness.engine.accounting import batch_size

        hub = runner.message_hub
        share = data_batch.get("update") if isinstance(data_batch, dict) else None
        clips = share.global_size if share is not None else batch_size(data_batch)
        self.times.add(float(hub.get_scalar("train/time").current()),
                       float(hub.get_scalar("train/data_time").current()), clips)

    def summary(self) -> dict:
        """This process's step times; the clips of every update, all processes together."""
        return self.times.summary()
