"""mmengine adapters around a `VideoTextModel`: the data preprocessor (stack, normalise, move
to device) and the BaseModel whose `loss` / `predict` modes the Runner calls; its `train_step`
is one optimiser update over a global batch (`harness.engine.update`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel

from harness.engine.update import optimiser_update
from methods.sample_random import name_random_layers

#: CLIP's normalisation, in 0-255 pixel units (the default; a backbone's own comes from its spec).
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


def pixel_normalization(backbone: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0-255 pixel units of a backbone (its `BackboneSpec` or the spec's dict, as
    results and checkpoints record it): CLIP's for open_clip backbones, ImageNet's for ViCLIP."""
    spec = backbone if isinstance(backbone, Mapping) else vars(backbone)
    if "mean" not in spec:  # a record written before backbones carried their normalisation: CLIP's
        return CLIP_MEAN, CLIP_STD
    return tuple(m * 255 for m in spec["mean"]), tuple(s * 255 for s in spec["std"])


class VideoPreprocessor(BaseDataPreprocessor):
    """Turns MMAction2's packed items (uint8 (V, 3, T, H, W) each) into a normalised float
    batch (B, V, T, 3, H, W): V views (clips x crops), T frames.

    `augment` (set for training with `data.augment_on=device`, see
    `harness.engine.device_augment`) crops, flips and resizes the uint8 training batch here, on
    the model's device, before normalisation; evaluation batches are never augmented."""

    augment: Any = None

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 3, 1, 1, 1), persistent=False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        batch = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
        if training and self.augment is not None:
            batch = self.augment(batch)
        batch = (batch.float() - self.mean) / self.std  # (B, V, 3, T, H, W)
        data["inputs"] = batch.permute(0, 1, 3, 2, 4, 5).contiguous()
        return data


def labels_of(data_samples: Sequence[Any], device: torch.device) -> torch.Tensor:
    return torch.cat([ds.gt_label.view(-1) for ds in data_samples]).to(device=device, dtype=torch.long)


class VideoClassifier(BaseModel):
    """The Runner-facing model. `classnames` is the class set scored (training classes during
    training; the evaluated set's classes during each evaluation)."""

    #: Clips per forward pass in training (`schedule.micro_batch` resolved by the engine; 0: the
    #: process's whole share of an update in one pass). Execution only: see `train_step`.
    micro_batch: int = 0

    def __init__(self, net: torch.nn.Module, classnames: Sequence[str], mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD) -> None:
        super().__init__(data_preprocessor=VideoPreprocessor(mean, std))
        self.net = net
        self.classnames = list(classnames)
        name_random_layers(net)  # per-sample drop path / dropout streams (methods.sample_random)

    def set_classes(self, classnames: Sequence[str]) -> None:
        self.classnames = list(classnames)

    def train_step(self, data: dict, optim_wrapper) -> dict[str, float]:
        """One optimiser update from this process's share of a global batch (the loader's item,
        `harness.engine.batches.UpdateShare` under 'update'), in micro-batches of `micro_batch`."""
        return optimiser_update(self, data, optim_wrapper, self.micro_batch)

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None, mode: str = "tensor",
                batch_labels: torch.Tensor | None = None):
        if mode == "loss":  # batch_labels: the whole update's labels (default: this batch's)
            labels = labels_of(data_samples, inputs.device)
            return self.net.training_losses(inputs[:, 0], labels, self.classnames,
                                            batch_labels=labels if batch_labels is None else batch_labels)
        scores = self.view_averaged_scores(inputs)
        if mode == "predict":
            labels = labels_of(data_samples, inputs.device)
            return [{"scores": s.float().cpu(), "label": int(lbl)} for s, lbl in zip(scores, labels)]
        return scores

    def view_averaged_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, V, T, 3, H, W) -> (B, C): softmax over classes per view, averaged over views."""
        batch, views = inputs.shape[:2]
        logits = self.net(inputs.flatten(0, 1), self.classnames)
        return logits.float().softmax(dim=-1).view(batch, views, -1).mean(dim=1)

    def trainable_state_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}
