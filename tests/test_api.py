"""The programmatic API (harness/api.py): the functions the CLI, the order-pair benchmark and
tests call instead of re-entering the CLI."""
from __future__ import annotations

import pytest

import harness.engine.runner as runner_mod
from harness import api
from harness.errors import HarnessError


def test_request_defaults_follow_the_dataset(harness_cache):
    req = api.request("zeroshot", "base2novel", sets=["schedule.epochs=3", "data.on_missing=error"])
    assert (req.backbone, req.pretrained, req.profile) == ("harness-tiny", "synthetic", "embedded")
    assert req.schedule_overrides == {"epochs": 3} and req.data_overrides == {"on_missing": "error"}
    assert api.request(["zeroshot"], "base2novel", pretrained="random").pretrained is None
    with pytest.raises(HarnessError, match="nosuch"):
        api.request("nosuch", "base2novel")


def test_run_keeps_each_failure_for_the_caller(tmp_path, harness_cache, monkeypatch):
    """A failing job does not stop the run and its own message reaches the caller (not an exit code)."""
    def fail(job, job_dir, progress=True, **kwargs):
        raise HarnessError(f"cannot read {job.method}'s video")

    monkeypatch.setattr(runner_mod, "run_job", fail)
    req = api.request("zeroshot,vificlip", "base2novel", profile="tiny", cache_dir=str(harness_cache))
    jobs = api.sweep_jobs(req, [[]])
    store = api.run(req, tmp_path, jobs=jobs, progress=False)
    failed = api.failures(store, jobs)
    assert sorted(f["message"] for f in failed) == ["cannot read vificlip's video", "cannot read zeroshot's video"]
    assert "cannot read zeroshot's video" in (tmp_path / "summary.md").read_text()
    assert api.failures(store, jobs[:1]) == [f for f in failed if f["job_id"] == jobs[0].job_id]


def test_evaluate_refuses_a_missing_checkpoint_before_any_job(tmp_path, harness_cache):
    ev = api.EvalRequest(checkpoint=str(tmp_path / "none.pt"), protocol="base2novel", out=str(tmp_path / "out"),
                         cache=str(harness_cache))
    with pytest.raises(HarnessError, match="none.pt"):
        api.evaluate(ev)
    assert not (tmp_path / "out").exists()


def test_params_rows_for_method_names_and_sets():
    rows = api.params("zeroshot,st_adapter", backbone="harness-tiny", frames=2, classes=3,
                      sets=["st_adapter.bottleneck=8"])
    assert [r["method"] for r in rows] == ["zeroshot", "st_adapter"]
    assert rows[0]["trainable"] == 0 and rows[1]["options"]["bottleneck"] == 8
    with pytest.raises(HarnessError, match="schedule"):
        api.params("zeroshot", backbone="harness-tiny", sets=["schedule.epochs=1"])
