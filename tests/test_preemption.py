"""Preemption: the cluster's end-of-allocation signal stops a job after the current optimiser
update with a checkpoint of that boundary, and the resumed job ends exactly as an uninterrupted
one (weights bit for bit, metrics); the signal outside training stops at once; plain runs are
untouched."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import harness.engine.checkpoints as ckpt_mod
from harness import api, preemption
from harness.engine.batches import GlobalBatchSampler

TINY_SETS = ["schedule.epochs=2", "schedule.warmup_epochs=1", "schedule.num_workers=0", "schedule.cpu_threads=1"]


def _request(cache: Path):
    return api.request("st_adapter", "base2novel", profile="tiny", sets=TINY_SETS, cache_dir=str(cache))


def _metrics(out: Path) -> dict:
    (path,) = out.glob("jobs/*/metrics.json")
    return json.loads(path.read_text())["metrics"]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    (path,) = out.glob("jobs/*/work/epoch_*.pth")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture
def preemptible():
    preemption.enable(signal.SIGUSR2)
    yield
    preemption.reset()


def test_sampler_resumed_within_an_epoch_yields_the_remaining_updates_unchanged():
    labels = list(range(10)) * 3  # 30 clips, batch 8: updates of 8, 8, 8, 6
    full = GlobalBatchSampler(labels, 8, seed=5)
    full.set_epoch(2)
    resumed = GlobalBatchSampler(labels, 8, seed=5)
    resumed.resume_within(2, 3)
    resumed.set_epoch(2)
    assert len(full) == 4 and len(resumed) == 1
    assert list(resumed) == list(full)[3:]  # same clips, seeds and batch labels as update 4 of 4
    resumed.set_epoch(3)  # the next epoch is whole again
    full.set_epoch(3)
    assert len(resumed) == 4 and list(resumed) == list(full)
    with pytest.raises(ValueError):
        resumed.resume_within(1, 5)


def test_stop_is_inactive_unless_a_launcher_enabled_it():
    preemption.reset()
    assert not preemption.enabled() and preemption.stop_agreed() is False
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_signal_outside_training_stops_at_once(preemptible):
    with pytest.raises(preemption.Preempted):
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(1000):  # the handler runs between bytecodes
            pass


def test_signal_inside_training_waits_for_the_update_boundary(preemptible):
    with preemption.deferred():
        os.kill(os.getpid(), signal.SIGUSR2)
        assert preemption.requested() and preemption.stop_agreed()
        with pytest.raises(preemption.Preempted):  # a second signal does not wait
            os.kill(os.getpid(), signal.SIGUSR2)
            for _ in range(1000):
                pass


def test_stop_file_written_by_the_task_is_seen(tmp_path, monkeypatch, preemptible):
    stop = tmp_path / "stop"
    monkeypatch.setenv(preemption.STOP_FILE_ENV, str(stop))
    assert not preemption.stop_agreed()
    stop.write_text("USR2")
    assert preemption.stop_agreed()


@pytest.mark.slow
def test_stop_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, harness_cache, monkeypatch):
    """The signal arrives during update 30 of 2 x 24: the job writes update_30.pth and stops; the
    rerun resumes after update 6 of epoch 2 and ends with the uninterrupted run's weights and
    metrics."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    api.run(_request(harness_cache), straight, progress=False)

    seen = {"n": 0}

    def signal_at_30(name: str) -> None:
        if name == "train.iter":
            seen["n"] += 1
            if seen["n"] == 30:
                os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM would, from outside

    monkeypatch.setattr(ckpt_mod, "fault_point", signal_at_30)
    preemption.enable(signal.SIGUSR2)
    try:
        with pytest.raises(preemption.Preempted, match="update 6 of 24 of epoch 2"):
            api.run(_request(harness_cache), stopped, progress=False)
    finally:
        preemption.reset()
    monkeypatch.undo()
    (job_dir,) = (stopped / "jobs").iterdir()
    assert sorted(p.name for p in (job_dir / "work").glob("*.pth")) == ["update_30.pth"]
    assert not (job_dir / "metrics.json").exists() and not (job_dir / "error.json").exists()
    assert not (job_dir / "job.lock").exists()  # the stop released the job's lock

    api.run(_request(harness_cache), stopped, progress=False)
    a, b = _metrics(straight), _metrics(stopped)
    assert b["train"]["resumed"] == {"epoch": 1, "iter": 30, "exact": True, "update_in_epoch": 6}
    assert a["train"]["iters"] == b["train"]["iters"] == 48
    assert a["train"]["final_loss"] == b["train"]["final_loss"]
    assert {k: {m: v for m, v in e.items() if m != "timing"} for k, e in a["evals"].items()} == \
        {k: {m: v for m, v in e.items() if m != "timing"} for k, e in b["evals"].items()}
    wa, wb = _weights(straight), _weights(stopped)
    assert wa.keys() == wb.keys() and wa and all(torch.equal(wa[k], wb[k]) for k in wa)
