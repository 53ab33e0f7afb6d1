"""One option helper, one `--set` grammar, one coercion rule (method options and run settings
alike), one cache-root rule."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.options import parse_value, split_assignment
from harness.paths import cache_root
from harness.settings import DataOptions, Schedule, build_dataclass
from methods.registry import make_config


@pytest.mark.parametrize("make", [
    lambda v: make_config("msta", {"rank": v}),                       # a method option (int)
    lambda v: build_dataclass(Schedule, {"epochs": v}, "schedule"),   # a run setting (int)
])
def test_the_same_rule_for_method_options_and_settings(make):
    assert make(3) is not None
    for bad in (True, 2.5, "big", [1]):
        with pytest.raises(HarnessError, match="expected int"):
            make(bad)


def test_coercion_by_kind():
    adapter_scale = make_config("aim", {"adapter_scale": 1}).adapter_scale
    assert adapter_scale == 1.0 and isinstance(adapter_scale, float)                  # int -> float
    assert build_dataclass(Schedule, {"lr_min_ratio": 0}, "schedule").lr_min_ratio == 0.0
    assert make_config("vificlip", {"prompt": 7}).prompt == "7"                       # scalar -> text
    with pytest.raises(HarnessError, match="expected str"):
        make_config("vificlip", {"prompt": ["a", "b"]})                               # not a list
    with pytest.raises(HarnessError, match="expected list"):
        build_dataclass(Schedule, {"views": 4}, "schedule")
    with pytest.raises(HarnessError, match="expected bool"):
        build_dataclass(DataOptions, {"color_jitter": "yes please"}, "data")
    with pytest.raises(HarnessError, match="must be one of"):
        build_dataclass(Schedule, {"select": "worst"}, "schedule")
    with pytest.raises(HarnessError, match="unknown option of method 'msta'"):
        make_config("msta", {"rnak": 4})


def test_one_set_grammar():
    assert split_assignment("aim.drop_path_rate=1e-1", "x") == ("aim", "drop_path_rate", 0.1)
    assert split_assignment("schedule.views=[4, 3]", "x") == ("schedule", "views", [4, 3])
    assert parse_value("false") is False and parse_value("a photo of {}.") == "a photo of {}."
    for bad in ("aim", "aim=1", ".x=1", "aim.=1"):
        with pytest.raises(HarnessError, match="expected <scope>"):
            split_assignment(bad, "<scope>.<name>=value")


def test_every_cache_lives_under_one_root(monkeypatch, tmp_path):
    from harness.data import embedded, upstream
    from harness.describe import default_llm_cache_dir
    from harness.pretrain import default_cache_dir as backbones_dir

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and cache_root(tmp_path / "x") == tmp_path / "x"
    assert [embedded.default_cache_dir(), upstream.default_cache_dir(), default_llm_cache_dir(), backbones_dir()] == [
        tmp_path / "embedded", tmp_path / "upstream", tmp_path / "llm", tmp_path / "backbones"]
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_root() == cache_root("") == Path.home() / ".cache" / "harness"
