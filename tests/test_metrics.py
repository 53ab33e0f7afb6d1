"""Metrics against hand-computed values."""
import numpy as np
import pytest

from harness.metrics import base2novel_summary, harmonic_mean, topk_accuracy


def test_topk_hand_computed():
    scores = np.array([
        [0.1, 0.7, 0.2],   # label 1: top1 hit
        [0.5, 0.3, 0.2],   # label 2: top1 miss, top2 miss (rank 3)
        [0.2, 0.5, 0.3],   # label 2: top1 miss, top2 hit
        [0.9, 0.05, 0.05],  # label 0: hit
    ])
    labels = [1, 2, 2, 0]
    acc = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(50.0)
    assert acc["top2"] == pytest.approx(75.0)
    assert acc["top5"] == pytest.approx(100.0)  # k capped at the 3 classes


def test_topk_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((3, 2)), [0, 1])


def test_harmonic_mean_hand_computed():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_base2novel_summary_uses_hm_of_means():
    per_split = [(80.0, 40.0), (60.0, 60.0)]
    s = base2novel_summary(per_split)
    assert s["base"] == pytest.approx(70.0)
    assert s["novel"] == pytest.approx(50.0)
    assert s["hm"] == pytest.approx(2 * 70 * 50 / 120)  # 58.33, not the mean of per-split HMs
    per_hm = [2 * 80 * 40 / 120, 60.0]
    assert s["hm_split_std"] == pytest.approx(np.std(per_hm))
    assert s["n_splits"] == 2


def test_accuracy_standard_error_hand_computed():
    from harness.metrics import accuracy_standard_error
    # 45% on 48 videos: sqrt(0.45 * 0.55 / 48) = sqrt(0.005156) = 0.071807 -> 7.18 points
    assert accuracy_standard_error(45.0, 48) == pytest.approx(7.1807, abs=1e-3)
    # 50% on 625 videos: sqrt(0.25 / 625) = 0.02 -> 2.0 points
    assert accuracy_standard_error(50.0, 625) == pytest.approx(2.0)
    assert accuracy_standard_error(100.0, 10) == 0.0
    assert np.isnan(accuracy_standard_error(50.0, 0))


def test_mean_standard_error_hand_computed():
    from harness.metrics import mean_standard_error
    # values 40, 44, 48: mean 44, sample std sqrt((16 + 0 + 16) / 2) = 4, SE 4 / sqrt(3) = 2.3094
    mean, se = mean_standard_error([40.0, 44.0, 48.0])
    assert mean == pytest.approx(44.0)
    assert se == pytest.approx(2.3094, abs=1e-4)
    mean, se = mean_standard_error([40.0, float("nan")])
    assert mean == 40.0 and np.isnan(se)


def test_within_noise_hand_computed():
    from harness.metrics import within_noise
    # se 3 and 4 -> combined 5; at z=2 differences up to 10 points are noise
    assert within_noise(50.0, 3.0, 60.0, 4.0)
    assert not within_noise(50.0, 3.0, 60.5, 4.0)
