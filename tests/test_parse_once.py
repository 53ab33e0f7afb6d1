"""An option is parsed once and its configuration built once (issue 22, "Architecture").

A `--set msta.rank=128` used to be parsed three times on its way to the jobs and `MSTAConfig`
built about five times per job (the request's check, the job expansion, the data check, the
engine...). Now the request parses each `--set` item once (`harness.settings.parse_setting`),
a `--sweep` value once however many grid points it is part of, the job expansion builds each
method's configuration once per sweep point (shared by every split of that point), and the
checks and the engine take it from the job (`JobSpec.method_options`). These tests count the
calls of the one value parser and of the configuration class, so adding a second parse or build
anywhere on these paths fails them. The whole `harness run` (engine, store, summary) is counted
in tests/test_cli.py (`test_a_run_parses_once_and_builds_once`, on the module's tiny run).
"""
from __future__ import annotations

import pytest
from parse_counting import counting_parses_and_builds

from harness import api
from harness.engine.runner import FreshModel
from harness.validate import InvalidInvocation
from methods.msta import MSTAConfig
from methods.registry import default_options, list_methods, make_config


@pytest.fixture
def counted():
    """(parses by value text, MSTAConfig builds): every call of the `--set` value parser and of
    the configuration class's constructor from now on."""
    with counting_parses_and_builds(MSTAConfig) as counts:
        yield counts


def test_a_run_parses_each_set_and_sweep_value_once_and_builds_each_config_once(harness_cache, tmp_path,
                                                                               counted):
    parses, builds = counted
    req = api.request("msta", "base2novel", sets=["msta.rank=128", "schedule.epochs=2"], profile="tiny",
                      pretrained="random", splits=[1, 2, 3], cache_dir=str(harness_cache))
    planned = api.plan(req, tmp_path / "out", sweeps=["msta.alpha=0.25,0.5"])  # with the data check
    assert len(planned.runnable) == 6  # 2 sweep points x 3 splits
    for job in planned.runnable[:4]:  # both points: their networks take the jobs' configurations
        net, _ = FreshModel().build(job)
        assert net.config is job.method_options
    assert parses == {"128": 1, "2": 1, "0.25": 1, "0.5": 1}
    assert [b["alpha"] for b in builds] == [0.25, 0.5]  # one build per sweep point, for its 3 splits
    assert all(b["rank"] == 128 for b in builds)
    by_point = {job.method_options.alpha: job.method_options for job in planned.runnable}
    assert all(job.method_options is by_point[job.method_options.alpha] for job in planned.runnable)


def test_params_parses_once_and_builds_once(counted):
    parses, builds = counted
    (row,) = api.params("msta", backbone="harness-tiny", sets=["msta.rank=64"], classes=4)
    assert row["options"]["rank"] == 64
    assert parses == {"64": 1}
    assert len(builds) == 1


def test_a_bad_value_is_still_listed_before_any_job(harness_cache, tmp_path):
    """The configuration's own checks (`validate()`) now run when it is built, in the plan: still
    every method's problem together, before any job starts."""
    req = api.request("msta,aim", "base2novel", sets=["msta.rank=0", "aim.mlp_ratio=0"], profile="tiny",
                      pretrained="random", cache_dir=str(harness_cache))
    with pytest.raises(InvalidInvocation) as err:
        api.plan(req, tmp_path / "out", dry_run=True)
    assert err.value.problems == ["msta.rank=0: must be >= 1", "--set aim.mlp_ratio=0.0: must be > 0"]



@pytest.mark.parametrize("method", list_methods())
def test_default_options_are_what_a_default_configuration_holds(method):
    """Report labels and the params table compare options with `default_options` (field defaults,
    nothing built): they must be the values a configuration built without options holds."""
    assert default_options(method) == make_config(method).to_dict()
