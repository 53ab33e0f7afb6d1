"""Shared test fixtures.

The embedded dataset is generated once per test session (a few seconds) into a temp cache, so
tests never touch the user's ~/.cache and never depend on a previous run.
"""
import os

import pytest

# open_clip would otherwise try the network for pretrained tags and wait ~50 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory):
    """Root folder of the default embedded dataset, generated once for the session."""
    from harness.data.embedded import ensure_embedded_dataset

    return ensure_embedded_dataset(tmp_path_factory.mktemp("harness-cache") / "embedded")
