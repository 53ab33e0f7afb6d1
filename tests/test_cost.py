"""The FLOP-based cost model of `harness reproduce` plans (harness/measure/cost.py)."""
from __future__ import annotations

from harness.measure.cost import CostModel


def test_methods_that_need_descriptions_are_costed():
    """MSTA's consistency loss encodes every class's descriptions each step: the cost model gives it
    placeholder descriptions (the cost does not depend on the words) and counts them, on a real
    backbone where the meta-device count cannot run; before, every MSTA job of a suite plan was
    'cost not estimated'."""
    model = CostModel()
    plain = model.step_cost("zeroshot", {}, "harness-tiny", 2)
    msta = model.step_cost("msta", {}, "harness-tiny", 2)
    assert msta.per_clip > plain.per_clip > 0
    assert msta.per_class_step > 1e6 > plain.per_class_step  # descriptions through the text tower per class
    assert msta.text_per_class > plain.text_per_class
