"""Forgetting: zero-shot accuracy on the pretraining vocabulary through a method's model
(harness/engine/forgetting.py), before and after training, in metrics.json and the tables.

Uses the session's synthetic harness-tiny (pretrained once per test cache, like test_cli's run)."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.backbone import get_tokenizer
from harness.cli import main
from harness.engine import forgetting
from harness.pretrain.probe import PROBE_TEMPLATE, PROBES, held_out_frames
from harness.pretrain.scenes import to_model_input
from harness.reports.build import write_report
from harness.weights import create_backbone
from methods.registry import build_method


@pytest.fixture(scope="module")
def synthetic(harness_cache):
    """The synthetic harness-tiny (raw CLIP), its tokenizer and image size."""
    clip, spec = create_backbone("harness-tiny", "synthetic", cache_dir=harness_cache)
    return clip.eval(), get_tokenizer(spec), spec.image_size


def _net(synthetic, method: str, frames: int):
    clip, tokenizer, _ = synthetic
    return build_method(method, copy.deepcopy(clip), tokenizer, frames, {}, ["red shape moving left", "blue shape"])


@torch.no_grad()
def _raw_clip_accuracy(clip, tokenizer, image_size: int, per_task: int) -> dict[str, float]:
    """By hand: the raw CLIP's image features of the same frames against the probe prompts."""
    out = {}
    for task, frames, labels in held_out_frames(image_size, per_task, forgetting.SEED, forgetting.TASKS):
        image = F.normalize(clip.encode_image(to_model_input(frames)), dim=-1)
        text = F.normalize(clip.encode_text(tokenizer([PROBE_TEMPLATE.format(c) for c in PROBES[task].classnames()])),
                           dim=-1)
        out[task] = round(100.0 * float(((image @ text.t()).argmax(1).numpy() == labels).mean()), 2)
    return out


def test_zeroshot_measurement_is_the_raw_clip_probe_of_the_same_frames(synthetic):
    clip, tokenizer, size = synthetic
    expected = _raw_clip_accuracy(clip, tokenizer, size, per_task=36)
    assert expected["color9"] > 50 and expected["position3"] > 50  # the pretraining taught something: not vacuous
    for frames in (1, 4):  # a static clip of T copies, mean-pooled, is the frame itself
        got = forgetting.measure_vocabulary(_net(synthetic, "zeroshot", frames), frames, size, per_task=36)
        assert got["tasks"] == expected
        assert got["mean"] == pytest.approx(np.mean(list(expected.values())), abs=0.01)
        assert got["n"] == 36 * len(forgetting.TASKS) and got["per_task"] == 36


def test_randomised_visual_weights_score_lower_and_nothing_else_moves(synthetic):
    net = _net(synthetic, "aim", 4)
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    before = forgetting.measure_vocabulary(net, 4, synthetic[2], per_task=36)
    assert torch.equal(torch.rand(3), expected_next)  # the job's random stream is untouched
    assert net.training  # its mode is restored
    assert forgetting.measure_vocabulary(net, 4, synthetic[2], per_task=36) == before  # deterministic
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.clip.visual.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    after = forgetting.measure_vocabulary(net, 4, synthetic[2], per_task=36)
    print(f"before {before['mean']}, after randomising the visual tower {after['mean']}, chance {forgetting.chance():.1f}")
    assert before["mean"] > forgetting.chance() + 25
    assert after["mean"] < before["mean"] - 20


def test_only_jobs_on_synthetic_weights_that_train_measure():
    job = lambda weights, checkpoint=None: SimpleNamespace(weights=weights, checkpoint=checkpoint or {})  # noqa: E731
    assert forgetting.measures_vocabulary(job({"kind": "synthetic", "recipe_hash": "x"}))
    assert not forgetting.measures_vocabulary(job({"kind": "open_clip"}))
    assert not forgetting.measures_vocabulary(job({"kind": "random"}))
    assert not forgetting.measures_vocabulary(job({"kind": "synthetic"}, {"sha256": "abc"}))  # `harness eval`
    assert forgetting.vocabulary_record(None, None) == {}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, harness_cache):
    out = tmp_path_factory.mktemp("forgetting-run")
    code = main(["run", "--methods", "zeroshot,aim", "--protocol", "base2novel", "--profile", "tiny", "--splits", "1",
                 "--cache", str(harness_cache), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_a_run_records_before_and_after_and_the_tables_show_them(tiny_run, tmp_path):
    records = {r["job"]["method"]: r for r in (json.loads(p.read_text()) for p in tiny_run.glob("jobs/*/metrics.json"))}
    zs, aim = records["zeroshot"]["metrics"]["vocabulary"], records["aim"]["metrics"]["vocabulary"]
    assert zs["before"] == zs["after"]  # nothing trained: the same model, the same frames
    assert aim["before"] == zs["before"]  # AIM's zero-initialised adapters: frozen CLIP before training
    assert aim["after"]["tasks"].keys() == set(forgetting.TASKS) and aim["n"] == 360 and aim["chance"] > 0
    assert aim["before"]["mean"] > aim["chance"] + 20
    summary = (tiny_run / "summary.md").read_text()
    assert "| Vocab before | Vocab after | Vocab change |" in summary and "360 held-out synthetic frames" in summary
    report = write_report([tiny_run], tmp_path / "report", formats=("md", "csv"), draw=False)
    row = report.tables[0].frame.set_index("Method")
    assert row.loc["aim", "Vocab change"] == pytest.approx(aim["after"]["mean"] - aim["before"]["mean"], abs=0.01)
    assert row.loc["zeroshot", "Vocab change"] == 0.0
    per_job = pd.read_csv(tmp_path / "report" / "per_job.csv")
    assert set(per_job["vocab_before"]) == {zs["before"]["mean"]}


def _job(root, job_id: str, split: int, method: str, vocabulary: tuple[float, float] | None) -> None:
    """A finished job as `harness run` records it (the fields the report reads), with a forgetting
    measurement (mean before, mean after) or none."""
    from harness.jobs.identity import RESULTS_FORMAT
    from methods.registry import make_config

    job = {"method": method, "method_options": make_config(method).to_dict(), "split": split, "shots": None, "seed": 1,
           "schedule": {"select": "last", "frames": 4, "epochs": 5}, "profile": None, "protocol": "base2novel",
           "protocol_hash": "h", "dataset": "embedded", "backbone": "harness-tiny", "pretrained": "synthetic"}
    metrics = {"evals": {name: {"top1": 50.0, "top5": 90.0, "n": 10, "classes": 4, "views": [1, 1]}
                         for name in ("base", "novel")},
               "params": {"trainable": 10, "total": 100, "pct_of_backbone": 10.0}, "train": {"selected": "last"}}
    if vocabulary:
        metrics["vocabulary"] = {"before": {"mean": vocabulary[0]}, "after": {"mean": vocabulary[1]}, "n": 360,
                                 "chance": 25.56}
    path = root / "jobs" / job_id / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"results_format": RESULTS_FORMAT, "job_id": job_id, "job": job, "metrics": metrics}))


def test_vocab_columns_are_means_over_runs_and_absent_without_measurements(tmp_path):
    run = tmp_path / "run"
    _job(run, "a1", 1, "aim", (60.0, 50.0))
    _job(run, "a2", 2, "aim", (62.0, 58.0))
    _job(run, "z1", 1, "zeroshot", None)  # an older result, or other weights: empty cells
    table = write_report([run], tmp_path / "out", formats=("md",), draw=False).tables[0]
    frame = table.frame.set_index("Method")
    assert frame.loc["aim", ["Vocab before", "Vocab after", "Vocab change"]].tolist() == [61.0, 54.0, -7.0]
    assert frame.loc["zeroshot", ["Vocab before", "Vocab after", "Vocab change"]].isna().all()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| 61.00 | 54.00 | -7.00 |" in text and "binomial standard error <= 2.6 points" in text

    bare = tmp_path / "bare"
    _job(bare, "z1", 1, "zeroshot", None)
    table = write_report([bare], tmp_path / "out2", formats=("md",), draw=False).tables[0]
    assert not {"Vocab before", "Vocab after", "Vocab change"} & set(table.frame.columns)
    assert "Vocab" not in (tmp_path / "out2" / "report.md").read_text()
