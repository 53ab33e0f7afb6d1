"""A tiny float64 training job through the engine's real `train()` (global-batch loader, train
step, mmengine Runner, schedulers, checkpoints), for tests/test_training_arithmetic.py.

In process: `train_toy(micro_batch, work_dir)`. Under torchrun (gloo, CPU):
`python -m torch.distributed.run --nproc-per-node 2 tests/global_batch_probe.py OUT MICRO [MICRO ...]`
writes OUT/m<MICRO>.pt per micro-batch (rank 0), as `train_toy` returns it.

The job: 102 synthetic clips (HMDB51 2-shot's size), 12 classes, batch 32, 3 epochs with 1
warm-up epoch. Everything random that a real job has is here: the clips are augmented in the
dataset with numpy's, Python's and torch's global generators (as MMAction2's transforms do), the
model has drop path and dropout, and its loss depends on which labels share the update's batch
(`batch_labels`, as OST's in-batch contrastive loss).
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import harness.engine.runner as runner_mod
from harness.jobs.spec import JobSpec, ListSpec
from harness.settings import DataOptions, Schedule
from methods.base import MethodConfig, ParamGroup
from methods.layers import DropPath, SampleDropout

CLIPS, CLASSES, FRAMES, SIDE, CROP = 102, 12, 2, 6, 4
SCHEDULE = {"epochs": 3, "warmup_epochs": 1, "batch_size": 32, "lr_min_ratio": 0.01, "select": "last",
            "val_interval": 0, "num_workers": 0, "cpu_threads": 1, "amp": "none", "frames": FRAMES}
LR = 0.01


class SyntheticClips(torch.utils.data.Dataset):
    """Fixed uint8 clips; each load draws a 4x4 crop, a flip and a brightness shift from the
    global numpy / random / torch generators (the way MMAction2's training transforms draw)."""

    metainfo: dict = {}

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1234)
        self.videos = torch.randint(0, 256, (CLIPS, 3, FRAMES, SIDE, SIDE), generator=gen, dtype=torch.uint8)
        self.labels = [(7 * i) % CLASSES for i in range(CLIPS)]

    def __len__(self) -> int:
        return CLIPS

    def get_data_info(self, index: int) -> dict[str, Any]:
        return {"label": self.labels[index]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        y, x = (int(v) for v in np.random.randint(0, SIDE - CROP + 1, size=2))
        clip = self.videos[index, :, :, y:y + CROP, x:x + CROP]
        if np.random.rand() < 0.5:
            clip = clip.flip(-1)
        shift = random.randint(-20, 20) + int(torch.randint(0, 10, ()))
        clip = (clip.int() + shift).clamp(0, 255).to(torch.uint8)
        return {"inputs": clip.unsqueeze(0), "data_samples": SimpleNamespace(gt_label=torch.tensor([self.labels[index]]))}


class BatchLabelToy(nn.Module):
    """A float64 stand-in for a method: mean-pooled pixels -> tanh(linear) + a drop-path branch
    -> dropout, scored against class embeddings. `loss_cls` is a cross-entropy over only the
    classes present in the update's whole batch (`batch_labels`); `loss_reg` does not depend on
    the batch (as MSTA's description-consistency loss)."""

    allows_grad_clip = True
    batch_coupled_losses: frozenset = frozenset()  # its loss couples clips through their labels only
    cosine_floor_per_group: bool = False  # one absolute cosine floor (the engine default)
    config = None

    @classmethod
    def averaged_epochs(cls, config) -> None:
        """No epoch averaging (the default of methods.base.VideoTextModel)."""
        return None

    def __init__(self) -> None:
        super().__init__()
        width = 16
        self.proj = nn.Linear(3 * CROP * CROP, width, dtype=torch.float64)
        self.branch = nn.Linear(width, width, dtype=torch.float64)
        self.drop_path = DropPath(0.3)
        self.dropout = SampleDropout(0.2)
        self.class_embeddings = nn.Parameter(0.3 * torch.randn(CLASSES, width, dtype=torch.float64))
        self.seen = 0  # clips through training forward passes in this process
        self.passes = 0

    def features(self, video: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.proj(video.double().mean(dim=1).flatten(1)))
        hidden = hidden + self.drop_path(torch.tanh(self.branch(hidden)))
        return self.dropout(hidden)

    def forward(self, video: torch.Tensor, classnames) -> torch.Tensor:
        return self.features(video) @ self.class_embeddings.T

    def training_losses(self, video, labels, classnames, *, batch_labels=None) -> dict[str, torch.Tensor]:
        self.seen += len(labels)
        self.passes += 1
        present = torch.unique(labels if batch_labels is None else batch_labels)
        logits = self.features(video) @ self.class_embeddings[present].T
        return {"loss_cls": F.cross_entropy(logits, torch.searchsorted(present, labels)),
                "loss_reg": 1e-3 * self.class_embeddings.pow(2).sum()}

    def param_groups(self) -> list[ParamGroup]:
        named = list(self.named_parameters())
        return [ParamGroup("decay", [n for n, _ in named], [p for _, p in named])]


def toy_job(micro_batch: int, **schedule: Any) -> JobSpec:
    lst = ListSpec(name="train", dataset="embedded", ann_file="synthetic", class_file="synthetic",
                   classnames=[f"class {i}" for i in range(CLASSES)], video_root="synthetic")
    return JobSpec(method="toy", method_options=MethodConfig(lr=LR, weight_decay=0.05), protocol="few_shot",
                   protocol_version=1, protocol_hash="toy", dataset="embedded", split=1, shots=2, seed=7,
                   profile=None, schedule=Schedule(**{**SCHEDULE, **schedule, "micro_batch": micro_batch}),
                   data=DataOptions(), backbone="toy", pretrained=None, train=lst, evals=[],
                   select_on=None, closed_set=True, summary="toy")


def train_toy(micro_batch: int, work_dir: Path, **schedule: Any) -> dict[str, Any]:
    """Train the toy through `harness.engine.runner.train`; the lr of every optimiser update,
    the training record, the final weights and the clips / forward passes of every process."""
    from harness.engine.model import VideoClassifier

    runner_mod._init_mm()
    runner_mod.init_distributed()
    dataset = SyntheticClips()
    original = runner_mod._dataset
    runner_mod._dataset = lambda lst, job, image_size, train: (dataset, {"listed": CLIPS, "used": CLIPS})
    torch.manual_seed(0)
    net = BatchLabelToy()
    model = VideoClassifier(net, [f"class {i}" for i in range(CLASSES)])
    lrs: list[float] = []

    def record(optimizer, args, kwargs) -> None:
        lrs.append(optimizer.param_groups[0]["lr"])

    handle = register_optimizer_step_pre_hook(record)
    spec = SimpleNamespace(image_size=CROP, to_dict=lambda: {"resolved_name": "toy"})
    try:
        stats = runner_mod.train(model, spec, toy_job(micro_batch, **schedule), Path(work_dir), progress=False)
    finally:
        handle.remove()
        runner_mod._dataset = original
    counts = [(net.seen, net.passes)]
    if torch.distributed.is_initialized():
        counts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(counts, (net.seen, net.passes))
    return {"lrs": lrs, "train": {k: stats[k] for k in ("iters", "updates_per_epoch", "micro_batch", "accumulation",
                                                          "world_size", "final_loss")},
            "weights": {k: v.detach().clone() for k, v in net.state_dict().items()}, "counts": counts}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for micro in (int(m) for m in sys.argv[2:]):
        result = train_toy(micro, out / f"work-m{micro}")
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save(result, out / f"m{micro}.pt")
