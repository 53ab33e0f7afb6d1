"""The embedded benchmark's setting (issue 17): the `embedded` profile selects the `benchmark`
dataset recipe, whose evaluation sets are large enough to resolve ~4-point differences, and whose
order-only pairs are reversal twins. Nothing here generates the 2,160-clip dataset: the recipe is
checked by arithmetic, the selection by intercepting the generator."""
from __future__ import annotations

import pytest

from harness.data import embedded
from harness.errors import HarnessError
from harness.jobs.expand import RunRequest, expand_jobs
from harness.metrics import accuracy_standard_error


def _eval_set_sizes(recipe: embedded.EmbeddedRecipe) -> dict[str, int]:
    """Videos per evaluation set, from the class lists and the per-class counts."""
    return {"base": len(embedded.BASE_CLASSES) * recipe.val_per_class,
            "novel": len(embedded.NOVEL_CLASSES) * recipe.val_per_class,
            "zero-shot val{k}": len(embedded.ZS_CLASSES) * recipe.zs_val_per_class,
            "fully supervised val": len(embedded.MAIN_CLASSES) * recipe.val_per_class}


@pytest.mark.real_benchmark_recipe
def test_benchmark_recipe_eval_sets_have_standard_error_at_most_about_2_points():
    sizes = _eval_set_sizes(embedded.named_recipe("benchmark"))
    assert sizes == {"base": 600, "novel": 600, "zero-shot val{k}": 600, "fully supervised val": 1200}
    # the worst case of the binomial SE is at 50% accuracy: 100 * sqrt(0.25 / 600) = 2.041
    for name, n in sizes.items():
        assert accuracy_standard_error(50.0, n) <= 2.05, name
    # the small recipe (tests, `tiny` profile) cannot resolve anything below ~14 points
    assert accuracy_standard_error(50.0, _eval_set_sizes(embedded.named_recipe("small"))["base"]) > 7.0


@pytest.mark.real_benchmark_recipe
def test_benchmark_recipe_makes_order_pairs_reversal_twins_and_keeps_the_small_default():
    bench, small = embedded.named_recipe("benchmark"), embedded.named_recipe("small")
    assert bench.reversal_twins and not small.reversal_twins
    assert small == embedded.EmbeddedRecipe()  # the default recipe (and its cache hash) did not move
    assert embedded.recipe_hash(bench) != embedded.recipe_hash(small)


def test_unknown_recipe_name_is_a_clear_error():
    with pytest.raises(HarnessError, match="unknown embedded dataset recipe 'huge'.*small, benchmark"):
        embedded.named_recipe("huge")


def _recipes_generated(monkeypatch, embedded_root, protocol: str, profile: str | None,
                       splits: list[int] | None) -> list[embedded.EmbeddedRecipe]:
    """The recipes job expansion asks the generator for (the generator is intercepted and hands
    back the session's small dataset, so nothing is generated)."""
    asked: list[embedded.EmbeddedRecipe] = []

    def fake_ensure(cache_dir=None, recipe=None):
        asked.append(recipe)
        return embedded_root

    monkeypatch.setattr(embedded, "ensure_embedded_dataset", fake_ensure)
    expand_jobs(RunRequest(methods=["zeroshot"], protocol=protocol, dataset="embedded", backbone="harness-tiny",
                           pretrained="synthetic", splits=splits, seed=1, method_options={},
                           schedule_overrides={}, data_overrides={}, profile=profile,
                           cache_dir=str(embedded_root.parent.parent)))
    return asked


@pytest.mark.real_benchmark_recipe
@pytest.mark.parametrize("profile, expected", [("embedded", "benchmark"), ("tiny", "small"), (None, "small")])
def test_profile_selects_the_dataset_recipe(monkeypatch, embedded_root, profile, expected):
    """`harness run` on the embedded dataset generates what its profile names (the generator is
    intercepted and handed the session's small dataset, so only the choice is checked)."""
    asked = _recipes_generated(monkeypatch, embedded_root, "base2novel", profile, [1])
    assert asked and all(r == embedded.NAMED_RECIPES[expected] for r in asked)
    if expected == "benchmark":
        assert asked[0].val_per_class == 100


@pytest.mark.real_benchmark_recipe
def test_zero_shot_targets_use_the_same_recipe_as_the_source(monkeypatch, embedded_root):
    asked = _recipes_generated(monkeypatch, embedded_root, "zero_shot", "embedded", None)
    assert len(asked) >= 2 and all(r == embedded.NAMED_RECIPES["benchmark"] for r in asked)
