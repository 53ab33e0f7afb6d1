"""Engine behaviour: model selection, resume after a crash, backbone errors."""
from __future__ import annotations

import json

import pytest

import harness.engine.runner as runner_mod
from harness.backbone import create_clip
from harness.cli import main
from harness.errors import HarnessError

TINY = ["--protocol", "base2novel", "--profile", "tiny", "--no-progress", "--set", "schedule.epochs=2",
        "--set", "schedule.warmup_epochs=1"]


def _metrics(out):
    return [json.loads(p.read_text()) for p in out.glob("jobs/*/metrics.json")]


def test_select_best_picks_a_checkpoint_on_base_validation(tmp_path, harness_cache):
    code = main(["run", "--methods", "st_adapter", *TINY, "--cache", str(harness_cache), "--out", str(tmp_path),
                 "--set", "schedule.select=best", "--set", "schedule.val_interval=1"])
    assert code == 0
    (rec,) = _metrics(tmp_path)
    assert rec["metrics"]["train"]["selected"].startswith("best_base_top1_epoch_")
    assert "best" in (tmp_path / "summary.md").read_text()


def test_crashed_job_resumes_from_its_checkpoint(tmp_path, harness_cache, monkeypatch):
    args = ["run", "--methods", "st_adapter", *TINY, "--cache", str(harness_cache), "--out", str(tmp_path)]

    def crash(*a, **k):
        raise RuntimeError("simulated crash after training")

    monkeypatch.setattr(runner_mod, "evaluate", crash)
    assert main(args) == 1  # the job failed; its error is recorded, nothing is marked finished
    assert not _metrics(tmp_path)
    (error,) = list(tmp_path.glob("jobs/*/error.json"))
    assert "simulated crash" in error.read_text()
    assert (error.parent / "work" / "last_checkpoint").read_text() == "epoch_2.pth"
    monkeypatch.undo()
    assert main(args) == 0
    (rec,) = _metrics(tmp_path)
    train = rec["metrics"]["train"]
    # resumed at the end of epoch 2 (the iteration count comes from the checkpoint): no step re-run
    assert train["resumed"] == {"epoch": 2, "iter": train["iters"], "exact": True}
    assert train["iters"] > 0 and train["checkpoint_notes"] == []


def test_offline_pretrained_tag_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="--pretrained /path/to/file.pt"):
        create_clip("ViT-B-16", "openai")


def test_openai_weights_resolve_to_quickgelu(monkeypatch):
    from harness.backbone import resolve_model_name

    name, notes = resolve_model_name("ViT-B-16", "openai")
    assert name == "ViT-B-16-quickgelu" and notes
    assert resolve_model_name("ViT-B-16", None)[0] == "ViT-B-16"


def test_missing_checkpoint_file_is_a_clear_error():
    with pytest.raises(HarnessError, match="no such file"):
        create_clip("ViT-B-16", "/nonexistent/ckpt.pt")


def test_data_fetch_offline_from_splits_root(tmp_path, upstream_root, capsys):
    code = main(["data", "fetch", "--splits-root", str(upstream_root), "--cache", str(tmp_path),
                 "--only", "vifi-clip/labels/*"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "upstream/vifi-clip/labels/hmdb_51_labels.csv").is_file()
