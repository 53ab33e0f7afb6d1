"""Tables never mix configurations: rows group by the full identity minus split and seed
(`config_key`), checked on hand-written metric files with hand-computed means and stds."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from harness.cli import main
from harness.jobs.expand import RunRequest, expand_jobs
from harness.jobs.identity import RESULTS_FORMAT
from harness.report import config_id, config_key, varying_settings


@pytest.fixture(scope="module")
def jobs(harness_cache):
    """One real base2novel and one few_shot job description (as dicts), to vary by hand."""
    def first(protocol):
        req = RunRequest(methods=["zeroshot"], protocol=protocol, dataset="embedded", backbone="harness-tiny",
                         pretrained="synthetic", splits=None, seed=1, method_options={}, schedule_overrides={},
                         data_overrides={}, profile="tiny", cache_dir=str(harness_cache))
        return expand_jobs(req)[0].to_dict()
    return {"base2novel": first("base2novel"), "few_shot": first("few_shot")}


def _variant(job, **changes):
    out = copy.deepcopy(job)
    for key, value in changes.items():
        if key == "frames":
            out["schedule"]["frames"] = value
        elif key in ("num_workers", "micro_batch"):
            out["schedule"][key] = value
        else:
            out[key] = value
    out["job_id"] = f"{out['method']}-{config_id(out)}-s{out['split']}-seed{out['seed']}"
    return out


def _write(run_dir, job, evals):
    metrics = {"evals": {name: {"top1": t1, "top5": 100.0, "n": 10, "classes": 6, "views": [1, 1]}
                         for name, t1 in evals.items()},
               "params": {"trainable": 1000, "total": 100000, "pct_of_backbone": 1.0}, "train": {}}
    folder = run_dir / "jobs" / job["job_id"]
    folder.mkdir(parents=True)
    record = {"results_format": RESULTS_FORMAT, "job_id": job["job_id"], "job": job, "metrics": metrics,
              "provenance": {}}
    (folder / "metrics.json").write_text(json.dumps(record))


def test_config_key_ignores_split_seed_and_execution_keys(jobs):
    job = jobs["base2novel"]
    same = [_variant(job, split=2, seed=7), _variant(job, num_workers=4, micro_batch=2)]
    assert {config_id(j) for j in same} == {config_id(job)}
    assert config_id(_variant(job, frames=16)) != config_id(job)
    key = config_key(job)
    assert key["schedule.frames"] == job["schedule"]["frames"] and "split" not in key and "seed" not in key
    shared, varying = varying_settings([key, config_key(_variant(job, frames=16))])
    assert varying == ["schedule.frames"] and shared["protocol"] == "base2novel"


def test_two_seeds_and_two_frame_counts_give_one_row_per_configuration(jobs, tmp_path, capsys):
    b2n, fs = jobs["base2novel"], jobs["few_shot"]
    # base2novel: frames 4 and 8, two seeds each (one on split 1, one on split 2)
    _write(tmp_path, _variant(b2n, frames=4, seed=1, split=1), {"base": 40.0, "novel": 20.0})
    _write(tmp_path, _variant(b2n, frames=4, seed=2, split=2), {"base": 60.0, "novel": 40.0})
    _write(tmp_path, _variant(b2n, frames=8, seed=1, split=1), {"base": 70.0, "novel": 50.0})
    _write(tmp_path, _variant(b2n, frames=8, seed=2, split=1), {"base": 70.0, "novel": 30.0})
    # few_shot in the same folder: two seeds of one configuration
    _write(tmp_path, _variant(fs, seed=1), {"val": 30.0})
    _write(tmp_path, _variant(fs, seed=2), {"val": 50.0})
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "summary.csv")
    b = table[table["Protocol"] == "base2novel"].set_index("schedule.frames")
    assert sorted(b.index) == [4, 8] and list(b["n"]) == [2, 2]
    assert b.loc[4, "Base"] == 50.0 and b.loc[4, "Base std"] == 14.14  # sample std of 40, 60: 20 / sqrt 2
    assert b.loc[4, "Novel"] == 30.0 and b.loc[4, "HM"] == 37.5  # 2*50*30/80
    assert b.loc[8, "Base"] == 70.0 and b.loc[8, "Novel"] == 40.0 and b.loc[8, "Novel std"] == 14.14
    assert b.loc[8, "HM"] == 50.91  # 2*70*40/110
    f = table[table["Protocol"] == "few_shot"]
    assert len(f) == 1 and f["Top-1"].iloc[0] == 40.0 and f["Top-1 std"].iloc[0] == 14.14 and f["n"].iloc[0] == 2
    assert "Rows differ in: `schedule.frames`" in out and "## few_shot / embedded" in out


def test_older_results_format_stays_readable(jobs, tmp_path, capsys):
    job = _variant(jobs["base2novel"])
    _write(tmp_path, job, {"base": 40.0, "novel": 20.0})
    path = next(tmp_path.glob("jobs/*/metrics.json"))
    record = json.loads(path.read_text())
    del record["results_format"], record["job"]["weights"], record["job"]["results_format"]
    path.write_text(json.dumps(record))
    assert main(["report", str(tmp_path)]) == 0
    assert "| zeroshot |" in capsys.readouterr().out


def test_results_of_an_older_format_are_never_averaged_with_current_ones(jobs, tmp_path, capsys):
    """The same settings, split and seed trained under format 2's rules and the current ones (a
    rerun into the same folder after an upgrade): two rows, never one mean of both."""
    current = _variant(jobs["base2novel"])
    older = _variant(jobs["base2novel"], results_format=RESULTS_FORMAT - 1)
    assert config_id(older) != config_id(current)
    _write(tmp_path, current, {"base": 44.0, "novel": 22.0})
    _write(tmp_path, older, {"base": 70.0, "novel": 35.0})
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| zeroshot |")]
    assert rows and all(r.startswith(("| zeroshot | 3 |", "| zeroshot | 2 |")) for r in rows)
    assert all(("44.0" in r) == r.startswith("| zeroshot | 3 |") != ("70.0" in r) for r in rows)
    assert "57.0" not in out  # the two base accuracies were never averaged
