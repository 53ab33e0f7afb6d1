"""Shared test fixtures.

The embedded dataset is generated once per test session (a few seconds) into a temp cache, so
tests never touch the user's ~/.cache and never depend on a previous run.
"""
import os

import pytest

# open_clip would otherwise try the network for pretrained tags and wait ~50 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _small_benchmark_recipe(request, monkeypatch):
    """The `embedded` profile selects the `benchmark` dataset recipe (2,160 clips, 600-video eval
    sets): generating and evaluating it in every test that runs the default profile would multiply
    the suite's time. Tests get the `small` recipe under that name, except those marked
    `real_benchmark_recipe` (tests/test_embedded_benchmark.py checks the real one)."""
    if request.node.get_closest_marker("real_benchmark_recipe") is None:
        from harness.data import embedded

        monkeypatch.setitem(embedded.NAMED_RECIPES, "benchmark", embedded.NAMED_RECIPES["small"])


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory):
    """Root folder of the default embedded dataset, generated once for the session."""
    from harness.data.embedded import ensure_embedded_dataset

    return ensure_embedded_dataset(tmp_path_factory.mktemp("harness-cache") / "embedded")


UPSTREAM = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "upstream"


@pytest.fixture(scope="session")
def upstream_root():
    """../shared/upstream (real split files); tests needing it skip elsewhere."""
    if not UPSTREAM.is_dir():
        pytest.skip("needs ../shared/upstream (real upstream split files)")
    return UPSTREAM


@pytest.fixture(scope="session")
def harness_cache(tmp_path_factory, embedded_root):
    """A cache dir whose embedded/ holds the session's generated dataset (for CLI runs)."""
    return embedded_root.parent.parent


# -- backbones for the per-method tests (methods are built on deep copies; see method_helpers) ---
@pytest.fixture(scope="module")
def tiny():
    """The harness-tiny CLIP and its tokenizer, created once per test module."""
    from method_helpers import make_backbone

    return make_backbone("harness-tiny")


@pytest.fixture(scope="session")
def b16_meta():
    """ViT-B/16 with its weights on the meta device: counts and shapes only, cheap to copy. One
    for the whole session (every user builds on a deep copy: `method_helpers.build`); creating it
    (a random ViT-B/16, then moved) costs about a second per module otherwise."""
    from method_helpers import make_backbone

    return make_backbone("ViT-B-16", meta=True)


# Tests measure behaviour, not speed: one intra-op thread avoids OpenMP's collapse when the
# 2-core CI machine runs anything beside the test process.
__import__("torch").set_num_threads(1)


@pytest.fixture
def skip_training(monkeypatch):
    """Jobs evaluate without the training step (fast CLI tests; `schedule.epochs=0` is an error)."""
    import harness.engine.runner as runner_mod

    monkeypatch.setattr(runner_mod, "train", lambda *args, **kwargs: {"iters": 0, "skipped": "skip_training fixture"})
