"""Report aggregation from hand-written metrics files: split means, sample stds (ddof 1), the
base-to-novel HM of the split averages, and the labelling of per-method-recipe rows."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.report import write_summary
from harness.store import RunStore
from methods.registry import make_config


def _write(root: Path, job_id: str, protocol: str, split: int, evals: dict, shots=None, seed=1, paper=False) -> None:
    job = {"method": "msta", "method_options": make_config("msta").to_dict(), "split": split, "shots": shots,
           "seed": seed, "schedule": {"select": "last", "frames": 8, "epochs": 50}, "profile": None,
           "protocol": protocol, "protocol_hash": "h", "dataset": "hmdb51", "backbone": "ViT-B-16",
           "pretrained": "openai",
           "recipe": {"schedule_kind": "paper" if paper else "shared", "scope": "published",
                      "method_options": {"lr": 1e-3, "weight_decay": 1e-3},
                      "not_applied": {"mixup": 0.8} if paper else {}}}
    metrics = {"evals": {name: {"top1": t1, "top5": t5, "n": 10, "classes": 5, "views": [1, 1]}
                         for name, (t1, t5) in evals.items()},
               "params": {"trainable": 1000, "total": 2000, "pct_of_backbone": 0.5},
               "flops_per_view": None, "train": {"selected": "last"}}
    path = root / "jobs" / job_id / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"job_id": job_id, "job": job, "metrics": metrics, "provenance": {}}))


def _summary(root: Path) -> tuple[list[dict], str]:
    text, _ = write_summary(root, RunStore(root).finished_records())
    with open(root / "summary.csv") as handle:
        return list(csv.DictReader(handle)), text


def test_base2novel_hm_of_split_means(tmp_path):
    for split, (b, n) in enumerate([(70, 40), (80, 50), (90, 60)], start=1):
        _write(tmp_path, f"j{split}", "base2novel", split, {"base": (b, 99), "novel": (n, 99)})
    (row,), _ = _summary(tmp_path)
    # base mean 80, novel mean 50, HM = 2*80*50/130 = 61.538 (not the mean of per-split HMs, 61.48)
    assert (float(row["Base"]), float(row["Novel"]), float(row["HM"])) == (80.0, 50.0, 61.54)
    # per-split HM 50.909, 61.538, 72.0 -> sample std sqrt((10.573^2 + 0.056^2 + 10.518^2) / 2) = 10.546
    assert float(row["HM std (splits)"]) == 10.55 and row["n"] == "3" and row["Splits"] == "1,2,3"


def test_summary_and_report_build_one_row_alike_and_a_single_run_has_no_std(tmp_path):
    """The run summary (harness/report.py) and the papers' tables (harness/reports/tables.py) take
    a base-to-novel row's numbers from one builder: the same means, sample stds (ddof 1) and SEs;
    a row of one run has no std (NaN, `-` in the summary), in both."""
    from harness.reports.build import write_report

    many, one = tmp_path / "many", tmp_path / "one"
    for split, (b, n) in enumerate([(70, 40), (80, 50), (90, 60)], start=1):
        _write(many, f"j{split}", "base2novel", split, {"base": (b, 99), "novel": (n, 99)})
    _write(one, "j1", "base2novel", 1, {"base": (70, 99), "novel": (40, 99)})
    for root, stds in ((many, (10.0, 10.0, 10.55)), (one, (None, None, None))):
        (summary,), text = _summary(root)
        (table,) = write_report([root], root / "report", formats=("csv",), draw=False).tables
        report = table.frame.iloc[0]
        for metric, std in zip(("Base", "Novel", "HM"), stds):
            summary_std = summary["HM std (splits)" if metric == "HM" else f"{metric} std"]
            assert float(summary[metric]) == report[metric]
            assert float(summary[f"{metric} se"]) == report[f"{metric} se"]
            if std is None:
                assert summary_std == "" and report[f"{metric} std"] != report[f"{metric} std"]  # NaN in both
            else:
                assert float(summary_std) == report[f"{metric} std"] == std
        if root == one:
            assert "| 70.0 (SE 14.49) | - | 40.0 (SE 15.49) | - |" in text  # '-': no spread of one run


def test_few_shot_mean_std_over_seeds_and_recipe_rows_apart(tmp_path):
    for seed, (t1, t5) in enumerate([(50, 80), (60, 90), (70, 100)], start=1):
        _write(tmp_path, f"s{seed}", "few_shot", 1, {"val": (t1, t5)}, shots=2, seed=seed)
    _write(tmp_path, "paper", "few_shot", 1, {"val": (20, 30)}, shots=2, paper=True)
    rows, text = _summary(tmp_path)
    by_method = {r["Method"]: r for r in rows}
    shared, paper = by_method["msta"], by_method["msta (per-method recipe)"]
    # top-1 50/60/70 -> mean 60, sample std sqrt(200/2) = 10; top-5 mean 90
    assert shared["n"] == "3" and paper["n"] == "1"
    assert (float(shared["Top-1"]), float(shared["Top-1 std"]), float(shared["Top-5"])) == (60.0, 10.0, 90.0)
    assert float(paper["Top-1"]) == 20.0
    assert "per-method recipe" in text and "not applied by the engine: mixup=0.8" in text


def test_zero_shot_mean_over_eval_splits(tmp_path):
    evals = {f"ucf101/split{i}": (t, t + 10) for i, t in enumerate([40, 50, 45], start=1)}
    evals.update({f"k600/split{i}": (t, t) for i, t in enumerate([30, 30, 33], start=1)})
    _write(tmp_path, "zs", "zero_shot", 1, evals)
    rows, _ = _summary(tmp_path)
    by_target = {r["target"]: r for r in rows}
    # ucf: mean 45, std sqrt((25 + 25 + 0) / 2) = 5; k600: mean 31, std sqrt((1 + 1 + 4) / 2) = 1.732
    assert (float(by_target["ucf101"]["Top-1"]), float(by_target["ucf101"]["Top-1 std"])) == (45.0, 5.0)
    assert (float(by_target["k600"]["Top-1"]), float(by_target["k600"]["Top-1 std"])) == pytest.approx((31.0, 1.73))
