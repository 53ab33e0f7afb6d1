"""The arithmetic behind the headline numbers, checked against values computed by hand:
multi-view score averaging, the warm-up + cosine learning rate per optimiser update, an update
split into micro-batches vs the full batch, label smoothing, and the issue-22 check that
micro-batch and process count change nothing a job computes (number of updates, lr of every
update, final weights in float64) on a 102-clip list with batch 32."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.engine.batches import UpdateShare
from harness.engine.model import VideoClassifier
from harness.engine.runner import _optim_wrapper, _schedulers
from harness.settings import Schedule
from methods.base import MethodConfig

ROOT = Path(__file__).resolve().parents[1]

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
    schedule = Schedule(epochs=epochs, warmup_epochs=warmup, lr_min_ratio=lr_min_ratio, betas=[0.9, 0.999], eps=1e-8,
                        grad_clip=0.0)
    return SimpleNamespace(schedule=schedule, method_options=MethodConfig(lr=lr, weight_decay=weight_decay), method="toy")


def _applied_lrs(epoch_length: int, iters: int, warmup: float = 1) -> list[float]:
    """Drive the engine's schedulers the way mmengine's Runner does (built with the train loader's
    length, stepped after every iteration = optimiser update) around an SGD parameter whose loss
    has gradient 1: the change of the parameter at an update is exactly the lr that update used."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    param = nn.Parameter(torch.zeros((), dtype=torch.float64))
    wrapper = OptimWrapper(torch.optim.SGD([param], lr=1.0))
    schedulers = [PARAM_SCHEDULERS.build({**cfg, "epoch_length": epoch_length}, default_args={"optimizer": wrapper})
                  for cfg in _schedulers(_job(warmup=warmup))]
    steps = []
    for _ in range(iters):
        before = float(param.detach())
        wrapper.update_params(param * 1.0)  # d loss / d param = 1
        steps.append(before - float(param.detach()))
        for sched in schedulers:
            sched.step()
    return steps


def test_warmup_cosine_lr_per_update():
    # lr 1, 3 epochs of 4 iterations, 1 warm-up epoch, cosine to 0.01.
    # Warm-up (mmengine LinearLR over iterations 0..3): 0.001 + 0.999 * t / 3.
    # Cosine over iterations 4..11 (T = 8): 0.01 + 0.99 * (1 + cos(pi * (t - 4) / 8)) / 2.
    lrs = _applied_lrs(4, 12)
    hand = {0: 0.001, 1: 0.334, 2: 0.667, 3: 1.0, 4: 1.0, 6: 0.8550179, 8: 0.505, 11: 0.0476796}
    # 6: 0.01 + 0.99 * (1 + cos(pi/4)) / 2 = 0.01 + 0.99 * 0.8535534 = 0.8550179
    # 11: 0.01 + 0.99 * (1 + cos(7 pi / 8)) / 2 = 0.01 + 0.99 * 0.0380602 = 0.0476796
    for it, value in hand.items():
        assert lrs[it] == pytest.approx(value, abs=1e-6), it


def test_fractional_warmup_epochs():
    # AIM warms up 2.5 epochs. Here 0.5 of 3 epochs of 4 iterations: warm-up over iterations 0..1
    # (0.001, then 1), cosine over 2..11 with T = 10: iteration 7 -> 0.01 + 0.99 * (1 + cos(pi/2)) / 2 = 0.505.
    lrs = _applied_lrs(4, 12, warmup=0.5)
    assert [round(v, 7) for v in (lrs[0], lrs[1], lrs[2], lrs[7])] == [0.001, 1.0, 1.0, 0.505]


def test_groups_with_their_own_lr_follow_the_schedule_to_their_own_floor():
    """ParamGroup.lr_scale (MoTE trains CLIP at 0.07 x the lr of its temporal module): the engine
    gives the group lr x 0.07, warm-up and cosine scale it alike, and with MoTE's per-group floor
    (cosine_floor_per_group) the cosine ends at the group's own lr x lr_min_ratio. Iteration 11 (as above): group A 0.0476796, group B
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
                  for cfg in _schedulers(_job(), floor_per_group=True)]
    steps = []
    for _ in range(12):
        before = (float(a.detach()), float(b.detach()))
        wrapper.update_params(a * 1.0 + b * 1.0)
        steps.append((before[0] - float(a.detach()), before[1] - float(b.detach())))
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


class _LabelSetNet(_GroupedLinear):
    """Linear scores over the pixels; the loss is a cross-entropy over only the classes present
    in `batch_labels` (a loss that depends on which labels share the update's batch)."""

    def training_losses(self, video, labels, classnames, *, batch_labels=None):
        present = torch.unique(batch_labels)
        logits = self(video.double().flatten(1))[:, present]
        return {"loss_cls": nn.functional.cross_entropy(logits, torch.searchsorted(present, labels))}


def _share(clips: int, labels: list[int]) -> dict:
    """A loader item: `clips` uint8 clips (V=1, 3, T=1, 1, 1) with their labels, one whole update."""
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randint(0, 256, (1, 3, 1, 1, 1), generator=gen, dtype=torch.uint8) for _ in range(clips)]
    samples = [SimpleNamespace(gt_label=torch.tensor([label])) for label in labels]
    share = UpdateShare(epoch=0, update=0, indices=tuple(range(clips)), seeds=tuple(range(clips)),
                        batch_labels=tuple(labels), update_seed=0)
    return {"inputs": inputs, "data_samples": samples, "update": share}


def _update_recording_gradients(model: VideoClassifier, micro: int, data: dict) -> tuple[dict, list]:
    """The engine's train step at `micro_batch=micro`, and the gradients its AdamW step saw."""
    model.micro_batch = micro
    wrapper = _optim_wrapper(model.net, _job(lr=0.1, weight_decay=0.05), amp=False)
    seen, step = {}, wrapper.optimizer.step

    def record_step(*a, **k):
        seen["grads"] = [p.grad.clone() for p in model.parameters()]
        return step(*a, **k)

    wrapper.optimizer.step = record_step
    return model.train_step(data, wrapper), seen["grads"]


def test_an_update_in_micro_batches_equals_the_full_batch_step():
    """One AdamW update from a 5-clip batch run as micro-batches of 5, 2 (2+2+1) and 1 equals
    the full-batch step computed directly: the gradient of the mean loss over all 5 clips (Adam
    alone is blind to a gradient scale error, so the gradient is compared too), with the loss
    defined over the classes present in the whole batch, not in each micro-batch."""
    labels = [0, 2, 2, 3, 0]  # micro-batch [0, 2] alone lacks class 3: its loss would differ

    def model():
        torch.manual_seed(1)
        return VideoClassifier(_LabelSetNet(3, 4).double(), ["a", "b", "c", "d"])

    reference = model()
    data = _share(5, labels)
    video = reference.data_preprocessor({"inputs": data["inputs"], "data_samples": data["data_samples"]})["inputs"]
    full = reference.net.training_losses(video[:, 0], torch.tensor(labels), None, batch_labels=torch.tensor(labels))
    full["loss_cls"].backward()
    expected_grads = [p.grad.clone() for p in reference.parameters()]
    torch.optim.AdamW(reference.parameters(), lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05).step()

    for micro in (5, 2, 1):
        net = model()
        logged, grads = _update_recording_gradients(net, micro, data)
        assert logged["loss"] == pytest.approx(float(full["loss_cls"].detach()), rel=1e-12), micro
        for a, b in zip(expected_grads, grads):
            assert torch.allclose(a, b, atol=1e-14, rtol=0), micro
        for a, b in zip(reference.parameters(), net.parameters()):
            assert torch.allclose(a, b, atol=1e-14, rtol=0), micro
        assert all(p.grad is None for p in net.parameters())  # cleared for the next update


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


# -- issue 22: micro-batch and process count are execution only ----------------------------------
#: The toy job (tests/global_batch_probe.py): 102 clips, batch 32, 3 epochs (1 warm-up), lr 0.01.
UPDATES_PER_EPOCH = 4  # 32 + 32 + 32 + 6: the short last batch is an update of its own
HAND_LRS = [0.01 * (0.001 + 0.999 * k / 3) for k in range(4)] + [
    0.01 * (0.01 + 0.99 * (1 + math.cos(math.pi * k / 8)) / 2) for k in range(8)]


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory):
    """The toy job trained in this process at micro-batch 32, 16 and 8, and at 16 with two
    loader worker processes (the clips' augmentation must not follow the worker)."""
    from global_batch_probe import train_toy

    root = tmp_path_factory.mktemp("micro")
    runs = {micro: train_toy(micro, root / f"m{micro}") for micro in (32, 16, 8)}
    runs["workers"] = train_toy(16, root / "workers", num_workers=2)
    return runs


def _assert_same_training(run: dict, reference: dict, label: str) -> None:
    assert run["train"]["iters"] == reference["train"]["iters"] == 3 * UPDATES_PER_EPOCH, label
    assert run["lrs"] == reference["lrs"], label  # the lr of every update, bit for bit
    assert run["train"]["final_loss"] == pytest.approx(reference["train"]["final_loss"], rel=1e-8), label
    assert run["weights"].keys() == reference["weights"].keys()
    for name, ref in reference["weights"].items():
        assert ref.dtype == torch.float64
        assert torch.allclose(run["weights"][name], ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max())), (label, name)


def test_micro_batch_changes_nothing_a_job_computes(one_process_runs):
    """Issue 22: batch 32 over 102 clips at micro-batch 32 / 16 / 8 (and with 2 loader workers):
    the same 12 updates with the hand-computed lr each (warm-up over updates 0..3, cosine over
    4..11), and the same final float64 weights, with per-sample augmentation, drop path, dropout
    and a loss over the labels of the whole update's batch."""
    reference = one_process_runs[32]
    assert reference["train"]["updates_per_epoch"] == UPDATES_PER_EPOCH
    assert reference["lrs"] == pytest.approx(HAND_LRS, rel=1e-12)
    for micro in (16, 8):
        run = one_process_runs[micro]
        _assert_same_training(run, reference, f"micro_batch={micro}")
        # really split: 306 clips in ceil(32 / micro) passes per full update, 1 for the 6-clip one
        passes = 3 * (3 * (32 // micro) + 1)
        assert run["counts"] == [(306, passes)] and run["train"]["accumulation"] == 32 // micro
    _assert_same_training(one_process_runs["workers"], reference, "2 loader workers")


@pytest.mark.slow
def test_two_processes_train_as_one(one_process_runs, tmp_path):
    """Issue 22: the same job on 2 gloo processes (torchrun, CPU) at micro-batch 16 (one pass per
    update) and 5 (16 = 5 + 5 + 5 + 1) equals the one-process runs, each process training on
    its half of every global batch (the 6-clip last batch: 3 + 3)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(port), str(ROOT / "tests" / "global_batch_probe.py"), str(tmp_path), "16", "5"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for micro, passes_per_update in ((16, 1), (5, 4)):
        run = torch.load(tmp_path / f"m{micro}.pt", weights_only=False)
        assert run["train"]["world_size"] == 2
        _assert_same_training(run, one_process_runs[32], f"2 processes, micro_batch={micro}")
        passes = 3 * (3 * passes_per_update + 1)
        assert run["counts"] == [(153, passes), (153, passes)]
