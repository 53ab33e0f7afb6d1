"""Weight averaging across epochs (harness.engine.hooks.EpochAverageHook), the engine feature a
method turns on by declaring `averaged_epochs` (FROSTER evaluates the mean of its epochs' weights):
hand-computed averages over epoch ranges (epoch 0 = the initial weights), exact resume from a
checkpoint, the refusal of an empty range, the job checks, and (slow) the real engine: the model it
evaluates holds the mean of the weights after each epoch, also after a crash and a resume."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import harness.engine.runner as runner_mod
from harness.cli import main
from harness.engine.hooks import EpochAverageHook
from harness.errors import HarnessError
from harness.settings import DataOptions, Schedule
from harness.validate import job_option_problems
from methods.base import EpochRange


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((2,), 10.0))  # the initial ("epoch 0") weights
        self.frozen = nn.Parameter(torch.ones(1), requires_grad=False)


class _Runner:
    """What the hook reads from mmengine's Runner: the model, the epoch counter, max_epochs."""

    def __init__(self, epochs: int) -> None:
        self.model, self.epoch, self.max_epochs = _Model(), 0, epochs


def _train(hook: EpochAverageHook, runner: _Runner, first: int, last: int) -> None:
    """Epochs first..last of a fake training in which the weights after epoch e are (e, 2e)."""
    if first == 1:
        hook.before_train(runner)
    for epoch in range(first, last + 1):
        runner.epoch = epoch - 1  # mmengine: the 0-based index of the epoch that just ended
        with torch.no_grad():
            runner.model.w.copy_(torch.tensor([epoch, 2.0 * epoch]))
        hook.after_train_epoch(runner)
    runner.epoch = last


@pytest.mark.parametrize("spec, expected", [
    ("2-", [3.0, 6.0]),               # epochs 2, 3, 4
    ("2-3", [2.5, 5.0]),              # epochs 2, 3 (later epochs trained but not averaged)
    ("0-2", [13 / 3, 16 / 3]),        # the initial weights (10, 10), epoch 1 (1, 2), epoch 2 (2, 4)
    ("4", [4.0, 8.0]),                # the last epoch alone: the weights as training leaves them
    ("3-22", [3.5, 7.0]),             # a range past the end takes the epochs that exist (swa_2_22 on 12)
])
def test_average_hand_computed(spec, expected):
    runner = _Runner(4)
    hook = EpochAverageHook(EpochRange.parse(spec, "test"))
    _train(hook, runner, 1, 4)
    hook.after_train(runner)
    assert runner.model.w.tolist() == pytest.approx(expected, abs=1e-6)
    assert runner.model.frozen.item() == 1.0 and "frozen" not in hook.sum
    assert hook.record()["epochs"] == EpochRange.parse(spec, "test").epochs(4)


def test_resume_from_a_checkpoint_averages_the_same_epochs():
    """Epochs 1-2, checkpoint (through torch.save/load), a new hook resumes and trains 3-4: the
    average is the uninterrupted one."""
    runner = _Runner(4)
    hook = EpochAverageHook(EpochRange(2, None))
    _train(hook, runner, 1, 2)
    checkpoint: dict = {"meta": {}}
    hook.before_save_checkpoint(runner, checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    resumed = EpochAverageHook(EpochRange(2, None))
    resumed.after_load_checkpoint(runner, torch.load(buffer, weights_only=False))
    assert resumed.averaged == [2]
    _train(resumed, runner, 3, 4)
    resumed.after_train(runner)
    assert runner.model.w.tolist() == pytest.approx([3.0, 6.0])


def test_epoch_zero_not_added_again_on_resume():
    runner = _Runner(3)
    hook = EpochAverageHook(EpochRange(0, None))
    hook.after_load_checkpoint(runner, {"meta": {EpochAverageHook.META_KEY: {"epochs": [0, 1], "sum": {
        "w": torch.tensor([11.0, 12.0], dtype=torch.float64)}}}})
    runner.epoch = 1
    hook.before_train(runner)
    assert hook.averaged == [0, 1]


def test_empty_range_is_an_error():
    runner = _Runner(1)
    hook = EpochAverageHook(EpochRange(2, None))
    _train(hook, runner, 1, 1)
    with pytest.raises(HarnessError, match="none of the 1 trained epochs"):
        hook.after_train(runner)


class _Job:
    def __init__(self, method: str, options: dict, **schedule) -> None:
        from methods.registry import make_config

        self.method, self.method_options = method, make_config(method, options)
        self.schedule = Schedule(**{"frames": 4, "epochs": 6, "warmup_epochs": 1, "batch_size": 8, "micro_batch": 0,
                                    "val_interval": 0, "views": [1, 1], "betas": [0.9, 0.98], "eps": 1e-8,
                                    "lr_min_ratio": 0.01, "label_smoothing": 0.0, "grad_clip": 0.0, "select": "last",
                                    **schedule})
        self.data = DataOptions(max_missing=0.05)
        self.checkpoint: dict = {}


def test_job_checks_refuse_best_selection_and_empty_ranges():
    assert job_option_problems(_Job("froster", {})) == []
    (best,) = job_option_problems(_Job("froster", {}, select="best"))
    assert "averaged over epochs 2-" in best and "schedule.select=last" in best
    (short,) = job_option_problems(_Job("froster", {}, epochs=1))
    assert "none of the schedule.epochs=1" in short
    assert job_option_problems(_Job("froster", {"average_epochs": "none"}, epochs=1, select="best")) == []
    assert job_option_problems(_Job("vificlip", {}, select="best")) == []  # no declaration, no averaging
    evaluation = _Job("froster", {}, epochs=0)  # `harness eval` of a checkpoint: nothing trained, nothing averaged
    evaluation.checkpoint = {"sha256": "0" * 64, "kind": "converted"}
    assert job_option_problems(evaluation) == []


@pytest.mark.slow
def test_engine_evaluates_the_mean_of_the_epochs_also_after_a_resume(tmp_path, harness_cache, monkeypatch):
    """A 3-epoch FROSTER job (2-shot, the smallest training list) averaging epochs 2-3: the weights
    after each epoch are copied by the test, and the model the engine evaluates holds
    (epoch 2 + epoch 3) / 2. The job crashes in evaluation and resumes from its last checkpoint: the
    resumed run evaluates the same weights."""
    args = ["run", "--methods", "froster", "--protocol", "few_shot", "--profile", "tiny", "--no-progress",
            "--set", "schedule.epochs=3", "--set", "froster.average_epochs=2-", "--set", "froster.lr=1e-3",
            "--cache", str(harness_cache), "--out", str(tmp_path)]
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    original = EpochAverageHook.after_train_epoch

    def snapshot(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        snapshots[runner.epoch + 1] = {n: p.detach().clone() for n, p in model.net.named_parameters() if p.requires_grad}
        return original(self, runner)

    evaluated: list[dict[str, torch.Tensor]] = []

    def crash(model, *a, **k):
        evaluated.append({n: p.detach().clone() for n, p in model.net.named_parameters() if p.requires_grad})
        raise RuntimeError("simulated crash in evaluation")

    monkeypatch.setattr(EpochAverageHook, "after_train_epoch", snapshot)
    monkeypatch.setattr(runner_mod, "evaluate", crash)
    assert main(args) == 1
    assert sorted(snapshots) == [1, 2, 3]
    expected = {n: (snapshots[2][n] + snapshots[3][n]) / 2 for n in snapshots[3]}
    assert any(not torch.equal(snapshots[2][n], snapshots[3][n]) for n in expected)  # training moved them
    for name, value in expected.items():
        torch.testing.assert_close(evaluated[0][name], value, rtol=0, atol=1e-7)
    assert evaluated[0]["projector_v.0.weight"].dtype == torch.float32

    assert main(args) == 1  # resumed from epoch_3.pth (nothing left to train), crashes in evaluation again
    assert len(evaluated) == 2 and sorted(snapshots) == [1, 2, 3]
    for name in expected:
        assert torch.equal(evaluated[1][name], evaluated[0][name]), name
    # `harness eval` / `predict` on the run checkpoint load the weights the job evaluates
    from harness.convert.checkpoint import EPOCH_AVERAGE_META, load_checkpoint

    assert EPOCH_AVERAGE_META == EpochAverageHook.META_KEY
    (last,) = tmp_path.glob("jobs/*/work/epoch_3.pth")
    loaded = dict(load_checkpoint(last).net.named_parameters())
    for name in expected:
        torch.testing.assert_close(loaded[name], evaluated[0][name], rtol=0, atol=0)
