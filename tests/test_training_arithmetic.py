"""The arithmetic behind the headline numbers, checked against values computed by hand:
multi-view score averaging, the warm-up + cosine learning rate (with and without gradient
accumulation), accumulation vs the full batch, and label smoothing."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.engine.model import VideoClassifier
from harness.engine.runner import _optim_wrapper, _schedulers

LN3 = math.log(3.0)


class FixedLogits(nn.Module):
    """Returns preset logits (one row per clip-view), whatever the video."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, video: torch.Tensor, classnames) -> torch.Tensor:
        assert video.shape[0] == self.logits.shape[0]
        return self.logits


def test_views_are_softmaxed_then_averaged():
    # video 0: view A logits (0, ln 3) -> softmax (1/4, 3/4); view B (0, 0) -> (1/2, 1/2); mean (3/8, 5/8).
    # video 1: view A (ln 3, 0) -> (3/4, 1/4); view B (0, ln 3) -> (1/4, 3/4); mean (1/2, 1/2).
    # (Averaging logits first would give softmax(0, ln3 / 2) = (0.366, 0.634) for video 0.)
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0], [LN3, 0.0], [0.0, LN3]])
    model = VideoClassifier(FixedLogits(logits), ["a", "b"])
    video = torch.zeros(2, 2, 1, 3, 2, 2)  # (B=2, V=2, T, 3, H, W)
    scores = model.view_averaged_scores(video)
    assert scores.flatten().tolist() == pytest.approx([0.375, 0.625, 0.5, 0.5], abs=1e-7)


def _job(lr=1.0, epochs=3, warmup=1, lr_min_ratio=0.01, weight_decay=0.0):
    schedule = {"epochs": epochs, "warmup_epochs": warmup, "lr_min_ratio": lr_min_ratio, "betas": [0.9, 0.999],
                "eps": 1e-8, "grad_clip": 0.0}
    return SimpleNamespace(schedule=schedule, method_options={"lr": lr, "weight_decay": weight_decay}, method="toy")


def _applied_lrs(accumulate: int, epoch_length: int, iters: int, warmup: float = 1) -> list[float]:
    """Drive the engine's schedulers the way mmengine's Runner does (built with the train loader's
    length, stepped after every iteration) around an SGD parameter whose loss has gradient 1:
    the change of the parameter at an update is exactly the learning rate that update used."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    param = nn.Parameter(torch.zeros((), dtype=torch.float64))
    wrapper = OptimWrapper(torch.optim.SGD([param], lr=1.0), accumulative_counts=accumulate)
    schedulers = [PARAM_SCHEDULERS.build({**cfg, "epoch_length": epoch_length}, default_args={"optimizer": wrapper})
                  for cfg in _schedulers(_job(warmup=warmup))]
    steps = []
    for _ in range(iters):
        before = float(param.detach())
        wrapper.update_params(param * 1.0)  # d loss / d param = 1, split over the micro-batches
        steps.append(before - float(param.detach()))
        for sched in schedulers:
            sched.step()
    return steps


def test_warmup_cosine_lr_without_accumulation():
    # lr 1, 3 epochs of 4 iterations, 1 warm-up epoch, cosine to 0.01.
    # Warm-up (mmengine LinearLR over iterations 0..3): 0.001 + 0.999 * t / 3.
    # Cosine over iterations 4..11 (T = 8): 0.01 + 0.99 * (1 + cos(pi * (t - 4) / 8)) / 2.
    lrs = _applied_lrs(1, 4, 12)
    hand = {0: 0.001, 1: 0.334, 2: 0.667, 3: 1.0, 4: 1.0, 6: 0.8550179, 8: 0.505, 11: 0.0476796}
    # 6: 0.01 + 0.99 * (1 + cos(pi/4)) / 2 = 0.01 + 0.99 * 0.8535534 = 0.8550179
    # 11: 0.01 + 0.99 * (1 + cos(7 pi / 8)) / 2 = 0.01 + 0.99 * 0.0380602 = 0.0476796
    for it, value in hand.items():
        assert lrs[it] == pytest.approx(value, abs=1e-6), it


def test_warmup_cosine_lr_with_accumulation():
    # Same data, micro-batch halved: 8 iterations per epoch, accumulation 2, so update j happens at
    # iteration 2j + 1 and uses the lr of that iteration (the schedule advances per micro-batch).
    # Warm-up over 0..7: 0.001 + 0.999 * t / 7; cosine over 8..23 (T = 16).
    lrs = _applied_lrs(2, 8, 24)
    assert all(lrs[i] == 0.0 for i in range(0, 24, 2))  # no update on the first micro-batch of a pair
    updates = lrs[1::2]
    assert len(updates) == 12  # the same number of updates as without accumulation
    hand = {0: 0.1437143, 1: 0.4291429, 3: 1.0, 4: 0.9904887, 8: 0.4084303, 11: 0.0195113}
    # 0: 0.001 + 0.999/7; 1: 0.001 + 0.999*3/7; 3: t=7 -> 1
    # 4: t=9 -> 0.01 + 0.99 * (1 + cos(pi/16)) / 2 = 0.01 + 0.99 * 0.990393
    # 8: t=17 -> 0.01 + 0.99 * (1 + cos(9 pi/16)) / 2 = 0.01 + 0.99 * 0.402455
    # 11: t=23 -> 0.01 + 0.99 * (1 + cos(15 pi/16)) / 2 = 0.01 + 0.99 * 0.00960736
    for j, value in hand.items():
        assert updates[j] == pytest.approx(value, abs=1e-6), j


def test_fractional_warmup_epochs():
    # AIM warms up 2.5 epochs. Here 0.5 of 3 epochs of 4 iterations: warm-up over iterations 0..1
    # (0.001, then 1), cosine over 2..11 with T = 10: iteration 7 -> 0.01 + 0.99 * (1 + cos(pi/2)) / 2 = 0.505.
    lrs = _applied_lrs(1, 4, 12, warmup=0.5)
    assert [round(v, 7) for v in (lrs[0], lrs[1], lrs[2], lrs[7])] == [0.001, 1.0, 1.0, 0.505]


def test_groups_with_their_own_lr_follow_the_schedule_to_their_own_floor():
    """ParamGroup.lr_scale (MoTE trains CLIP at 0.07 x the lr of its temporal module): the engine
    gives the group lr x 0.07, warm-up and cosine scale it alike, and the cosine ends at the
    group's own lr x lr_min_ratio. Iteration 11 (as above): group A 0.0476796, group B
    0.07 x 0.0476796 = 0.00333757 (an absolute floor of 0.01 would give 0.01 + 0.06 x 0.0380602 = 0.0122836)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    from harness.engine.runner import optimizer_groups
    from methods.base import ParamGroup

    a, b = nn.Parameter(torch.zeros((), dtype=torch.float64)), nn.Parameter(torch.zeros((), dtype=torch.float64))
    net = SimpleNamespace(param_groups=lambda: [ParamGroup("head", ["a"], [a]), ParamGroup("clip", ["b"], [b], lr_scale=0.07)])
    groups = optimizer_groups(net, 0.0, 1.0)
    assert [g["lr"] for g in groups] == [1.0, 0.07]
    wrapper = OptimWrapper(torch.optim.SGD(groups, lr=1.0))
    schedulers = [PARAM_SCHEDULERS.build({**cfg, "epoch_length": 4}, default_args={"optimizer": wrapper})
                  for cfg in _schedulers(_job())]
    steps = []
    for _ in range(12):
        before = (float(a), float(b))
        wrapper.update_params(a * 1.0 + b * 1.0)
        steps.append((before[0] - float(a), before[1] - float(b)))
        for sched in schedulers:
            sched.step()
    assert steps[0] == pytest.approx((0.001, 0.00007), abs=1e-9)
    assert steps[11] == pytest.approx((0.0476796, 0.00333757), abs=1e-7)


class _GroupedLinear(nn.Linear):
    """A linear layer with the method contract's optimiser hook (one decayed group)."""

    allows_grad_clip = True

    def param_groups(self):
        from methods.base import ParamGroup

        return [ParamGroup("decay", [n for n, _ in self.named_parameters()], list(self.parameters()))]


def test_micro_batch_accumulation_equals_full_batch_step():
    """One AdamW update from 2 micro-batches x accumulation 2 equals one from the batch of 4:
    same accumulated gradient (Adam alone is blind to a gradient scale error) and same weights."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])

    def run(accumulate: int):
        torch.manual_seed(1)
        net = _GroupedLinear(3, 2).double()
        wrapper = _optim_wrapper(net, _job(lr=0.1, weight_decay=0.05), accumulate, amp=False)
        seen = {}
        step = wrapper.optimizer.step

        def record_step(*a, **k):
            seen["grad"] = [p.grad.clone() for p in net.parameters()]
            return step(*a, **k)

        wrapper.optimizer.step = record_step
        micro = 4 // accumulate
        for i in range(accumulate):
            xb, yb = x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro]
            wrapper.update_params(nn.functional.cross_entropy(net(xb), yb))
        return seen["grad"], [p.detach().clone() for p in net.parameters()]

    grads_full, params_full = run(1)
    grads_acc, params_acc = run(2)
    for a, b in zip(grads_full, grads_acc):
        assert torch.allclose(a, b, atol=1e-14, rtol=0)
    for a, b in zip(params_full, params_acc):
        assert torch.allclose(a, b, atol=1e-14, rtol=0)


def test_label_smoothing_in_the_training_loss():
    # logits (0, ln 3) -> p = (1/4, 3/4), label 1, smoothing 0.1 over 2 classes:
    # 0.9 * -ln(3/4) + 0.1 * (-ln(1/4) - ln(3/4)) / 2 = 0.258914 + 0.083699 = 0.342613
    from methods.base import VideoTextModel

    fake = SimpleNamespace(label_smoothing=0.1, extra_losses=lambda classnames: {})
    loss = VideoTextModel.losses(fake, torch.tensor([[0.0, LN3]]), torch.tensor([1]), ["a", "b"])["loss_cls"]
    assert float(loss) == pytest.approx(0.342613, abs=1e-6)
    fake.label_smoothing = 0.0
    loss = VideoTextModel.losses(fake, torch.tensor([[0.0, LN3]]), torch.tensor([1]), ["a", "b"])["loss_cls"]
    assert float(loss) == pytest.approx(-math.log(0.75), abs=1e-7)
