"""`harness report DIR...`: the papers' layouts from hand-written metric files, checked against
hand-computed means, stds and HMs; bold, quoted rows, Δ vs published, flags, CSV dtypes, LaTeX
structure, duplicates across folders, plots and `harness status`."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import harness.reports
from harness.cli import main
from harness.jobs.identity import RESULTS_FORMAT
from harness.reports import latex, plots
from harness.reports.aggregate import collect, eval_frame
from harness.reports.build import write_report
from methods.registry import make_config


def write_job(root: Path, job_id: str, evals: dict, *, method="msta", protocol="base2novel", dataset="hmdb51",
              split=1, seed=1, shots=None, frames=8, backbone="ViT-B-16", pretrained="openai", profile=None,
              options=None, trainable=1000, classes=10, used=None, git_sha="abc", videos=10,
              eval_files=None) -> None:
    """One finished job as `harness run` records it (only the fields the report reads).
    `eval_files`: eval name -> the list file it scored (recorded in job["evals"])."""
    job = {"method": method, "method_options": {**make_config(method).to_dict(), **(options or {})},
           "split": split, "shots": shots, "seed": seed, "schedule": {"select": "last", "frames": frames, "epochs": 50},
           "profile": profile, "protocol": protocol, "protocol_hash": "h", "dataset": dataset,
           "backbone": backbone, "pretrained": pretrained}
    if eval_files:
        job["evals"] = [{"name": name, "ann_file": f} for name, f in eval_files.items()]
    metrics = {"evals": {name: {"top1": t1, "top5": t5, "n": videos, "classes": classes, "views": [1, 1],
                                "videos": {"listed": videos, "used": videos if used is None else used}}
                         for name, (t1, t5) in evals.items()},
               "params": {"trainable": trainable, "total": 100000, "pct_of_backbone": trainable / 1000},
               "flops_per_view": {"gmacs": 2.5}, "train": {"selected": "last"}}
    path = root / "jobs" / job_id / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"results_format": RESULTS_FORMAT, "job_id": job_id, "job": job, "metrics": metrics,
                                "provenance": {"code": {"git_sha": git_sha}}}))


@pytest.fixture()
def b2n(tmp_path):
    """msta (2 splits) and vificlip (32 frames, as published) on HMDB51 and UCF101."""
    run = tmp_path / "run"
    write_job(run, "m-h1", {"base": (70, 99), "novel": (40, 99)}, split=1)
    write_job(run, "m-h2", {"base": (80, 99), "novel": (50, 99)}, split=2)
    write_job(run, "m-u1", {"base": (90, 99), "novel": (60, 99)}, dataset="ucf101")
    write_job(run, "v-h1", {"base": (74, 99), "novel": (54, 99)}, method="vificlip", frames=32, trainable=0)
    write_job(run, "v-u1", {"base": (85, 99), "novel": (70, 99)}, method="vificlip", frames=32, dataset="ucf101",
              trainable=0)
    return run


def test_base2novel_blocks_bold_quoted_rows_and_delta(b2n, tmp_path):
    report = write_report([b2n], tmp_path / "out", with_published=True, draw=False)
    text = (tmp_path / "out" / "report.md").read_text()
    # HMDB: msta base 75 ± 7.07, novel 45 ± 7.07 (sample std of two runs 10 apart: 10 / sqrt 2), HM 2*75*45/120
    # = 56.25, per-split HM 50.91 / 61.54 -> std 10.63 / sqrt 2 = 7.52;
    # vificlip HM 2*74*54/128 = 62.44, published 61.9 -> Δ +0.54 (same method, backbone, weights, 32 frames)
    hmdb = text.split("## Base-to-novel: hmdb51")[1].split("##")[0]
    assert "| Method | schedule.frames | Trainable | % of backbone | Base | Novel | HM | Δ Base | Δ Novel | Δ HM | n | Source |" in hmdb
    # SE (10 videos per eval set): base sqrt(14.49^2 + 12.65^2) / 2 = 9.62 (binomial 70% and 80% of 10);
    # vificlip is within noise of msta (the first row: no zeroshot here) everywhere: `≈`
    assert ("| msta | 8 | 1,000 | 1.00 | **75.00 ± 7.07 (SE 9.62)** | 45.00 ± 7.07 (SE 11.07) | "
            "56.25 ± 7.52 (SE 9.06) |  |  |  | 2 |  |") in hmdb
    assert ("| vificlip | 32 | 0 | 0.00 | 74.00 (SE 13.87) ≈ | **54.00 (SE 15.76) ≈** | **62.44 (SE 11.63) ≈** | "
            "+0.20 | +0.70 | +0.54 | 1 |  |") in hmdb
    # quoted rows: below, never bold, with source; MSTA's published row is ViCLIP and so never a Δ
    assert ("| vificlip (quoted) |  |  |  | 73.80 | 53.30 | 61.90 |  |  |  |  | ViFi-CLIP README (CLIP ViT-B-16, "
            "32 frames) |") in hmdb
    assert "| msta (quoted) |  |  |  |  |  | 66.30 |  |  |  |  | MSTA paper (ViCLIP ViT-B-16, 8 frames) |" in hmdb
    assert hmdb.index("| vificlip |") < hmdb.index("| vificlip (quoted) |")
    # UCF: the published ViFi-CLIP base (92.9) is higher than every measured one, yet the bold is measured
    ucf = text.split("## Base-to-novel: ucf101")[1].split("##")[0]
    assert "**90.00 (SE 9.49)**" in ucf and "**92.90" not in ucf
    # average over datasets: msta base (75 + 90) / 2 = 82.5, novel (45 + 60) / 2 = 52.5, HM 64.17;
    # vificlip base 79.5, novel 62 -> HM 2*79.5*62/141.5 = 69.67; quoted rows are never averaged in
    avg = text.split("## Base-to-novel: average over hmdb51, ucf101")[1].split("##")[0]
    assert "| msta | 8 | 1,000 | 1.00 | **82.50 (SE 6.75)** | 52.50 (SE 9.52) | 64.17 (SE 7.40) | 2 |" in avg
    assert "| vificlip | 32 | 0 | 0.00 | 79.50 (SE 8.94) ≈ | **62.00 (SE 10.71) ≈** | **69.67 (SE 7.58) ≈** | 2 |" in avg
    assert "quoted" not in avg.split("|---|")[1]
    assert [t.slug for t in report.tables] == ["base2novel-hmdb51", "base2novel-ucf101", "base2novel-average"]


def test_backbone_profile_and_frames_never_share_a_row(tmp_path):
    run = tmp_path / "run"
    write_job(run, "a", {"base": (50, 99), "novel": (40, 99)})
    write_job(run, "b", {"base": (60, 99), "novel": (40, 99)}, backbone="ViT-B-32")
    write_job(run, "c", {"base": (70, 99), "novel": (40, 99)}, profile="tiny")
    write_job(run, "d", {"base": (80, 99), "novel": (40, 99)}, frames=16)
    report = write_report([run], tmp_path / "out", draw=False)
    (table,) = report.tables
    frame = table.frame.set_index("Base")
    assert sorted(frame.index) == [50, 60, 70, 80] and list(frame["n"]) == [1, 1, 1, 1]
    assert frame.loc[60, "backbone"] == "ViT-B-32" and frame.loc[70, "profile"] == "tiny"
    assert frame.loc[80, "schedule.frames"] == 16
    assert frame.loc[70, "Flags"] == "short profile" and frame.loc[50, "Flags"] == ""


def test_csv_round_trips_with_numeric_dtypes(b2n, tmp_path):
    write_report([b2n], tmp_path / "out", formats=("csv",), with_published=True, draw=False)
    table = pd.read_csv(tmp_path / "out" / "tables" / "base2novel-hmdb51.csv")
    for col in ("Trainable", "% of backbone", "Base", "Base std", "Novel", "HM", "Δ HM"):
        assert pd.api.types.is_numeric_dtype(table[col]), col
    # one quoted row per method with a published HMDB51 base-to-novel number (vificlip, aim, st_adapter,
    # msta, and the methods added since), read from the quoted-rows file itself
    published = pd.read_csv(Path(harness.reports.__file__).with_name("published.csv"), comment="#")
    quoted = set(published.query("protocol == 'base2novel' and dataset == 'hmdb51'")["method"])
    assert {"vificlip", "aim", "st_adapter", "msta"} <= quoted
    assert table["Quoted"].dtype == bool and table["Quoted"].sum() == len(quoted)
    measured = table[~table["Quoted"]].set_index("Method")
    assert measured.loc["msta", "Trainable"] == 1000 and measured.loc["msta", "HM std"] == pytest.approx(7.52)
    per_job = pd.read_csv(tmp_path / "out" / "per_job.csv")
    assert len(per_job) == 5 and per_job["job_id"].is_unique  # one row per job
    assert {"dataset", "backbone", "pretrained", "schedule.frames", "method_options.rank", "split", "seed"} <= set(per_job)
    assert pd.api.types.is_numeric_dtype(per_job["base.top1"]) and pd.api.types.is_numeric_dtype(per_job["trainable"])
    summary = pd.read_csv(b2n / "summary.csv") if (b2n / "summary.csv").exists() else None
    assert summary is None  # write_report alone never touches the run's own summary


def test_summary_csv_of_a_run_keeps_numbers(b2n, capsys):
    assert main(["report", str(b2n), "--no-plots"]) == 0
    summary = pd.read_csv(b2n / "summary.csv")
    assert pd.api.types.is_integer_dtype(summary["Trainable"]) and summary["Trainable"].max() == 1000
    assert "| msta | 8 | 1,000 | 1.00 |" in (b2n / "summary.md").read_text()
    assert (b2n / "report" / "report.md").is_file() and (b2n / "report" / "report.tex").is_file()


def test_duplicates_counted_once_and_conflicts_flagged(b2n, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(b2n / "jobs", copy / "jobs")
    other = tmp_path / "other"
    write_job(other, "m-h1", {"base": (10, 99), "novel": (10, 99)})  # same id, other numbers
    found = collect([b2n, copy, other])
    assert len(found.records) == 5 and found.duplicates == 5
    assert len(found.conflicts) == 1 and found.conflicts[0].startswith("m-h1:")
    report = write_report([b2n, copy, other], tmp_path / "out", draw=False)
    assert "**Conflict**: m-h1" in report.markdown
    # the kept copy is the first one: HMDB msta still averages 70/80 and 40/50
    assert "**75.00 ± 7.07 (SE 9.62)**" in report.markdown


def test_few_shot_zero_shot_and_fully_supervised_layouts(tmp_path):
    run = tmp_path / "run"
    for shots, t1s in ((2, (50, 60)), (4, (70, 70))):
        for seed, t1 in enumerate(t1s, 1):
            write_job(run, f"fs{shots}-{seed}", {"val": (t1, 99)}, protocol="few_shot", shots=shots, seed=seed)
    write_job(run, "fs-ucf", {"val": (80, 99)}, protocol="few_shot", dataset="ucf101", shots=2)
    # zero-shot: trained on k400, 3 evaluation splits per target; HMDB at chance (100/51 = 1.96 -> <= 3.96)
    zs = {f"hmdb51/split{i}": (v, 99) for i, v in enumerate((3, 3, 3), 1)}
    zs.update({f"ucf101/split{i}": (v, 99) for i, v in enumerate((40, 50, 45), 1)})
    write_job(run, "zs", zs, protocol="zero_shot", dataset="k400", classes=51)
    write_job(run, "fsup", {"val": (80, 95), "val@1x1": (75, 90)}, protocol="fully_supervised", dataset="k400",
              used=9, trainable=2_000_000)
    report = write_report([run], tmp_path / "out", draw=False)
    by_slug = {t.slug: t for t in report.tables}
    few = by_slug["few_shot"].frame.iloc[0]
    # HMDB K=2: seeds 50 / 60 -> 55 ± 7.07 (sample std); K=4: 70 ± 0; UCF K=2: one run -> no std
    assert (few["hmdb51 K=2"], few["hmdb51 K=2 std"], few["hmdb51 K=4"], few["hmdb51 K=4 std"]) == (55, 7.07, 70, 0)
    assert few["ucf101 K=2"] == 80 and few["ucf101 K=2 std"] != few["ucf101 K=2 std"]
    assert by_slug["few_shot"].metrics == ["hmdb51 K=2", "hmdb51 K=4", "ucf101 K=2"]
    zero = by_slug["zero_shot"].frame.iloc[0]
    # ucf mean 45, sample std sqrt(50/2) = 5
    assert (zero["ucf101"], zero["ucf101 std"], zero["hmdb51"]) == (45, 5, 3)
    assert "near chance" in zero["Flags"]
    sup = by_slug["fully_supervised-k400"].frame.set_index("Eval")
    assert sup.loc["val", "Top-1"] == 80 and sup.loc["val", "Top-5"] == 95 and sup.loc["val", "Frames x views"] == "8x1x1"
    assert sup.loc["val", "GMACs x views"] == 2.5 and sup.loc["val", "Flags"] == "videos missing"
    assert "| msta | 2.00M |" in report.markdown


def _tabular_rows(text: str) -> list[str]:
    body = text.split("\\midrule", 1)[1].split("\\bottomrule")[0]
    return [r for r in body.replace("\\midrule", "").split("\\\\") if r.strip()]


def test_latex_is_balanced_escaped_and_compiles(b2n, tmp_path):
    report = write_report([b2n], tmp_path / "out", formats=("latex",), with_published=True, draw=False)
    hmdb = next(t for t in report.tables if t.slug == "base2novel-hmdb51")
    text = latex.to_tabular(hmdb)
    assert text.count("\\begin{tabular}") == 1 and text.count("{") == text.count("}")
    columns = re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1)
    header = text.split("\\toprule")[1].split("\\\\")[0]
    assert header.count("&") == len(columns) - 1 and "\\% of backbone" in header and "$\\Delta$ HM" in header
    rows = _tabular_rows(text)
    # one tabular row per table row (measured + one quoted row per published method), none ragged
    assert len(rows) == len(hmdb.frame) >= 6 and all(r.count("&") == len(columns) - 1 for r in rows)
    assert "\\textbf{75.00$\\pm$7.07 (SE 9.62)}" in text and "\\textbf{61.90}" not in text
    assert "62.44 (SE 11.63) $\\approx$" in text
    assert latex.escape("st_adapter 5% {x}") == "st\\_adapter 5\\% \\{x\\}"
    document = (tmp_path / "out" / "report.tex").read_text()
    assert "$\\approx$: within noise of the reference row msta" in document
    assert document.count("\\begin{tabular}") == 3 and (tmp_path / "out" / "tables" / "base2novel-hmdb51.tex").is_file()
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "report.tex"], cwd=tmp_path / "out",
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]


def _is_image(path: Path, magic: bytes) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes().startswith(magic)


def test_plots_and_ablation_in_numeric_order_with_default(tmp_path):
    run = tmp_path / "run"
    # msta.rank default is 256 (no option in the label); 64 < 128 < 256 must not sort as text
    for rank, base in ((128, 70), (256, 80), (64, 60)):
        write_job(run, f"r{rank}", {"base": (base, 99), "novel": (40, 99)}, options={"rank": rank})
    write_job(run, "zs", {"base": (30, 99), "novel": (30, 99)}, method="zeroshot", trainable=0)
    df = eval_frame(collect([run]).records)
    (ablation,) = plots.ablation_sets(df)
    assert ablation["axes"] == ["method_options.rank"] and ablation["defaults"] == {"method_options.rank": 256}
    table = plots.ablation_table(ablation)
    assert list(table["rank"]) == [64, 128, 256]
    # HM 2*60*40/100 = 48, 2*70*40/110 = 50.91, 2*80*40/120 = 53.33
    assert list(table["HM"]) == [48.0, 50.91, 53.33]
    write_report([run], tmp_path / "out")
    out = tmp_path / "out" / "plots"
    assert _is_image(out / "ablation_rank.png", b"\x89PNG") and _is_image(out / "ablation_rank.pdf", b"%PDF")
    assert _is_image(out / "params_base2novel-hmdb51.png", b"\x89PNG")


def test_training_curves_from_the_job_log(tmp_path):
    run = tmp_path / "run"
    write_job(run, "j", {"base": (50, 99), "novel": (40, 99)})
    vis = run / "jobs" / "j" / "work" / "20260101_000000" / "vis_data"
    vis.mkdir(parents=True)
    lines = [{"lr": 1e-3 / i, "loss": 2.0 / i, "epoch": 1, "iter": 10 * i, "step": 10 * i} for i in range(1, 5)]
    lines.append({"base/top1": 55.0, "step": 1})
    (vis / "scalars.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"cut by a kill")
    assert len(plots.read_scalars(run / "jobs" / "j")) == 5
    write_report([run], tmp_path / "out")
    assert _is_image(tmp_path / "out" / "plots" / "curves" / "j.png", b"\x89PNG")


def test_status_done_running_failed_pending(tmp_path, capsys):
    run = tmp_path / "run"
    write_job(run, "done-job", {"val": (50, 99)}, protocol="few_shot", shots=2)
    failed = run / "jobs" / "failed-job"
    failed.mkdir()
    (failed / "error.json").write_text(json.dumps({"type": "HarnessError", "message": "bad video list\nmore"}))
    running = run / "jobs" / "running-job"
    running.mkdir()
    (running / "job.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "started": time.time(), "stale_after_s": 600}))
    stale = run / "jobs" / "stale-job"
    stale.mkdir()
    (stale / "job.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "stale_after_s": 600}))
    os.utime(stale / "job.lock", (time.time() - 3600, time.time() - 3600))
    (run / "invocations").mkdir()
    (run / "invocations" / "t-1.json").write_text(json.dumps({"request": {}, "provenance": {},
                                                             "job_ids": ["done-job", "never-started"]}))
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"never-started\s+pending\s+not started", out)
    assert re.search(r"done-job\s+done", out) and re.search(r"failed-job\s+failed\s+HarnessError: bad video list$", out, re.M)
    assert re.search(rf"running-job\s+running\s+pid {os.getpid()} on {socket.gethostname()}", out)
    assert re.search(r"stale-job\s+pending\s+started, not finished; stale lock", out)
    assert "1 done, 1 running, 1 failed, 2 pending" in out


@pytest.mark.slow
def test_two_by_two_ablation_on_tiny_gives_four_jobs_a_heatmap_and_a_table(tmp_path, harness_cache, capsys,
                                                                             skip_training):
    run = tmp_path / "run"
    args = ["run", "--methods", "msta", "--protocol", "base2novel", "--profile", "tiny", "--cache", str(harness_cache),
            "--out", str(run), "--no-progress", "--sweep", "msta.rank=8,16", "--sweep", "msta.alpha=0.5,2.0"]
    assert main(args) == 0
    assert len(list(run.glob("jobs/*/metrics.json"))) == 4
    assert _is_image(run / "ablation_alpha_x_rank.png", b"\x89PNG")
    assert main(["report", str(run)]) == 0
    text = (run / "report" / "report.md").read_text()
    assert "## Ablation: msta (base2novel, embedded)" in text and "| alpha | rank=8 | rank=16 |" in text
    assert _is_image(run / "report" / "plots" / "ablation_alpha_x_rank.png", b"\x89PNG")
    assert main(["status", str(run)]) == 0
    assert "4 done, 0 running, 0 failed, 0 pending" in capsys.readouterr().out
