"""Order-pair scoring against hand-computed values, and (slow) the claim it supports: a temporal
method separates the order-only class pairs where mean-pooling ViFi-CLIP cannot."""
from __future__ import annotations

import numpy as np
import pytest

from harness.measure.order_pairs import pair_accuracy


def test_pair_accuracy_hand_computed():
    classes = ["left", "right", "other"]
    scores = np.array([[0.6, 0.3, 0.1],   # left, correct
                       [0.2, 0.1, 0.7],   # left, wrong vs right? 0.2 > 0.1 -> correct
                       [0.5, 0.4, 0.1],   # right, wrong
                       [0.1, 0.2, 0.7],   # right, correct (0.2 > 0.1)
                       [0.9, 0.0, 0.1]])  # other: not a pair video
    labels = np.array([0, 0, 1, 1, 2])
    res = pair_accuracy(scores, labels, classes, [("left", "right")])
    assert res["videos"] == 4
    assert res["pair_accuracy"] == pytest.approx(75.0)
    assert res["per_pair"]["left / right"] == pytest.approx(75.0)
