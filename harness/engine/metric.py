"""The mmengine metric used for `select=best` validation during training."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric

from harness.metrics import topk_accuracy


class SelectionMetric(BaseMetric):
    """Top-1/top-5 of view-averaged scores (items produced by VideoClassifier 'predict')."""

    default_prefix = "val"

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        self.results.extend({"scores": d["scores"].numpy(), "label": d["label"]} for d in data_samples)

    def compute_metrics(self, results: list) -> dict[str, float]:
        scores = np.stack([r["scores"] for r in results])
        return topk_accuracy(scores, [r["label"] for r in results])
