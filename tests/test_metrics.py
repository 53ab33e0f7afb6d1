"""Metrics against hand-computed values."""
import math

import numpy as np
import pytest

from harness.metrics import accuracy_standard_error, base2novel_summary, harmonic_mean, topk_accuracy


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
    assert s["hm_split_std"] == pytest.approx(np.std(per_hm, ddof=1))  # sample std: |53.33 - 60| / sqrt 2 = 4.71
    assert s["base_std"] == pytest.approx(14.1421, abs=1e-4)  # |80 - 60| / sqrt 2
    assert s["n_splits"] == 2
    one = base2novel_summary([(80.0, 40.0)])  # one run: no spread is defined (NaN, shown as '-'), not 0
    assert all(math.isnan(one[k]) for k in ("base_std", "novel_std", "hm_split_std"))


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


def test_se_of_a_two_run_average_hand_computed():
    from harness.metrics import run_average_standard_error
    # run 1: 60% of 100 videos -> sqrt(.6 * .4 / 100) = 4.899 points; run 2: 80% of 400 -> sqrt(.16 / 400) = 2.0
    se1, se2 = accuracy_standard_error(60.0, 100), accuracy_standard_error(80.0, 400)
    assert (se1, se2) == pytest.approx((4.899, 2.0), abs=1e-3)
    # different eval sets (two splits): sqrt(24 + 4) / 2 = 2.6458
    assert run_average_standard_error([se1, se2]) == pytest.approx(2.6458, abs=1e-4)
    assert run_average_standard_error([se1, se2], ["split1", "split2"]) == pytest.approx(2.6458, abs=1e-4)
    # one eval set (two seeds of one split): its sampling error is shared, (4.899 + 2.0) / 2 = 3.4495
    assert run_average_standard_error([se1, se2], ["split1", "split1"]) == pytest.approx(3.4495, abs=1e-4)
    assert np.isnan(run_average_standard_error([se1, float("nan")]))


def test_hm_standard_error_by_the_delta_method_hand_computed():
    from harness.metrics import harmonic_mean_standard_error
    # B 80 (SE 4), N 40 (SE 3): dHM/dB = 2 * 40^2 / 120^2 = 0.2222, dHM/dN = 2 * 80^2 / 120^2 = 0.8889;
    # SE = sqrt((0.2222 * 4)^2 + (0.8889 * 3)^2) = sqrt(0.7901 + 7.1111) = 2.8109
    assert harmonic_mean_standard_error(80.0, 4.0, 40.0, 3.0) == pytest.approx(2.8109, abs=1e-4)
    # the linearisation agrees with a small finite difference of the HM itself
    eps = 1e-4
    slope_b = (harmonic_mean(80.0 + eps, 40.0) - harmonic_mean(80.0, 40.0)) / eps
    assert slope_b == pytest.approx(2 * 40 ** 2 / 120 ** 2, rel=1e-3)
    assert np.isnan(harmonic_mean_standard_error(0.0, 1.0, 0.0, 1.0))
