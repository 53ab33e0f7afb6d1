"""Standard errors and within-noise marks in the report tables, the run summary and the
ablation tables, against hand-computed binomial errors (harness.reports.noise)."""
from __future__ import annotations

import pandas as pd
import pytest
from test_reports import write_job

from harness.report import write_summary
from harness.reports import plots
from harness.reports.aggregate import collect, eval_frame
from harness.reports.build import write_report
from harness.store import RunStore


@pytest.fixture()
def near_and_far(tmp_path):
    """400 videos per eval set. zeroshot (the reference, though not the first row) 50 / 50;
    vificlip 53 / 52 (near); msta 70 / 50 (base far, novel equal)."""
    run = tmp_path / "run"
    write_job(run, "a-msta", {"base": (70, 99), "novel": (50, 99)}, videos=400)
    write_job(run, "b-vificlip", {"base": (53, 99), "novel": (52, 99)}, method="vificlip", trainable=0, videos=400)
    write_job(run, "c-zeroshot", {"base": (50, 99), "novel": (50, 99)}, method="zeroshot", trainable=0, videos=400)
    return run


def test_cells_carry_the_binomial_se_and_near_rows_are_marked(near_and_far, tmp_path):
    report = write_report([near_and_far], tmp_path / "out", formats=("md", "csv"), draw=False)
    (table,) = report.tables
    frame = table.frame.set_index("Method")
    # SE on 400 videos: 50% -> sqrt(.25 / 400) = 2.5; 53% -> sqrt(.53 * .47 / 400) = 2.4954; 70% -> 2.2913
    assert frame.loc["zeroshot", "Base se"] == 2.5 and frame.loc["vificlip", "Base se"] == 2.5
    assert frame.loc["msta", "Base se"] == 2.29
    # HM SE of zeroshot (B = N = 50, SE 2.5 each): 0.5 * sqrt(2) * 2.5 = 1.7678
    assert frame.loc["zeroshot", "HM se"] == 1.77
    # vificlip base: |53 - 50| = 3 <= 2 sqrt(2.5^2 + 2.5^2) = 7.07 -> within noise; msta: 20 > 6.78 -> not
    assert bool(frame.loc["vificlip", "Base within_noise"]) and not bool(frame.loc["msta", "Base within_noise"])
    assert bool(frame.loc["msta", "Novel within_noise"])  # 50 vs 50
    assert pd.isna(frame.loc["zeroshot", "Base within_noise"])  # the reference is never compared with itself
    md = report.markdown.split("## Base-to-novel: hmdb51")[1]
    assert "| vificlip | 0 | 0.00 | 53.00 (SE 2.50) ≈ |" in md
    assert "| msta | 1,000 | 1.00 | **70.00 (SE 2.29)** | 50.00 (SE 2.50) ≈ |" in md
    assert "| zeroshot | 0 | 0.00 | 50.00 (SE 2.50) | 50.00 (SE 2.50) |" in md
    assert "within noise of the reference row `zeroshot`" in md
    csv = pd.read_csv(tmp_path / "out" / "tables" / "base2novel-hmdb51.csv")
    assert {"Base se", "Novel se", "HM se", "Base within_noise"} <= set(csv.columns)


def test_run_summary_has_se_columns_and_marks(near_and_far):
    text, _ = write_summary(near_and_far, RunStore(near_and_far).finished_records())
    summary = pd.read_csv(near_and_far / "summary.csv").set_index("Method")
    assert summary.loc["zeroshot", "Base se"] == 2.5 and summary.loc["msta", "Base se"] == 2.29
    assert summary.loc["vificlip", "Base within_noise"] and not summary.loc["msta", "Base within_noise"]
    assert "53.0 (SE 2.50) ≈" in text and "70.0 (SE 2.29) |" in text


def test_seeds_of_one_split_share_their_eval_set_error(tmp_path):
    """Two seeds on one eval set: SE = mean of the run SEs, not sqrt(sum)/k (that would treat one
    set of videos as two independent samples)."""
    run = tmp_path / "run"
    write_job(run, "s1", {"base": (60, 99), "novel": (50, 99)}, seed=1, videos=100)
    write_job(run, "s2", {"base": (80, 99), "novel": (50, 99)}, seed=2, videos=100)
    (table,) = write_report([run], tmp_path / "out", formats=("md",), draw=False).tables
    # 60% of 100: 4.899, 80% of 100: 4.0 -> (4.899 + 4.0) / 2 = 4.45 (independent sets would give 3.16)
    assert table.frame["Base se"].iloc[0] == 4.45


def test_splits_scoring_one_list_file_share_its_error(tmp_path):
    """Base-to-novel splits train on different files but score the same base_val / novel_val
    lists: the recorded list file, not the split index, decides which runs share sampling error."""
    run = tmp_path / "run"
    shared = {"base": "b2n/base_val.txt", "novel": "b2n/novel_val.txt"}
    write_job(run, "s1", {"base": (60, 99), "novel": (50, 99)}, split=1, videos=100, eval_files=shared)
    write_job(run, "s2", {"base": (80, 99), "novel": (50, 99)}, split=2, videos=100, eval_files=shared)
    (table,) = write_report([run], tmp_path / "out", formats=("md",), draw=False).tables
    assert table.frame["Base se"].iloc[0] == 4.45  # (4.899 + 4.0) / 2, as for seeds of one set
    other = tmp_path / "other"
    write_job(other, "s1", {"base": (60, 99), "novel": (50, 99)}, split=1, videos=100,
              eval_files={"base": "s1_val.txt", "novel": "n.txt"})
    write_job(other, "s2", {"base": (80, 99), "novel": (50, 99)}, split=2, videos=100,
              eval_files={"base": "s2_val.txt", "novel": "n.txt"})
    (table,) = write_report([other], tmp_path / "out2", formats=("md",), draw=False).tables
    assert table.frame["Base se"].iloc[0] == 3.16  # sqrt(4.899^2 + 4.0^2) / 2 = 3.162: independent lists


def test_ablation_marks_values_within_noise_of_the_best(tmp_path):
    run = tmp_path / "run"
    # top-1 on 400 videos (SE 2.5 at 50%): rank 64 far below the best, rank 128 close to it
    for rank, top1 in ((64, 50), (128, 68), (256, 70)):
        write_job(run, f"r{rank}", {"val": (top1, 99)}, protocol="fully_supervised", options={"rank": rank},
                  videos=400)
    (ablation,) = plots.ablation_sets(eval_frame(collect([run]).records))
    # SEs 2.5 (50%), 2.332 (68%), 2.291 (70%), in the order of the points
    assert sorted(round(se, 3) for se in ablation["ses"]) == [2.291, 2.332, 2.5]
    table = plots.ablation_table(ablation, annotated=True).set_index("rank")
    # 70 - 68 = 2 <= 2 sqrt(2.291^2 + 2.332^2) = 6.54 -> ≈; 70 - 50 = 20 -> no mark
    assert table.loc[128, "top-1"] == "68.00 (SE 2.33) ≈"
    assert table.loc[64, "top-1"] == "50.00 (SE 2.50)"
    assert table.loc[256, "top-1"] == "**70.00 (SE 2.29)**"
    assert list(plots.ablation_table(ablation)["top-1"]) == [50.0, 68.0, 70.0]  # the plain table stays numeric


def test_rows_of_different_eval_sets_are_never_compared(tmp_path):
    """Fully supervised: one row per (configuration, eval list); each eval list has its own
    reference row (zeroshot's row of that list)."""
    run = tmp_path / "run"
    write_job(run, "a-msta", {"val": (52, 99), "val@2x3": (52, 99)}, protocol="fully_supervised", videos=400)
    write_job(run, "b-zs", {"val": (50, 99), "val@2x3": (90, 99)}, protocol="fully_supervised", method="zeroshot",
              trainable=0, videos=400)
    (table,) = write_report([run], tmp_path / "out", formats=("md",), draw=False).tables
    marks = {(m, e): v for m, e, v in zip(table.frame["Method"], table.frame["Eval"], table.frame["Top-1 within_noise"])}
    # val: 52 vs 50 -> ≈; val@2x3: 52 vs 90 -> not (compared with zeroshot's val, 50, it would be ≈)
    assert marks[("msta", "val")] == True and marks[("msta", "val@2x3")] == False  # noqa: E712 (numpy bools)
    assert pd.isna(marks[("zeroshot", "val")]) and pd.isna(marks[("zeroshot", "val@2x3")])  # both references
