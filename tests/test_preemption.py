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


@pytest.fixture(scope="module")
def straight(tmp_path_factory, harness_cache) -> Path:
    """The job run without interruption (what every stopped and resumed run must end with)."""
    out = tmp_path_factory.mktemp("straight")
    api.run(_request(harness_cache), out, progress=False)
    return out


def _same_result(straight: Path, resumed: Path) -> dict:
    a, b = _metrics(straight), _metrics(resumed)
    assert a["train"]["iters"] == b["train"]["iters"] == 48
    assert a["train"]["final_loss"] == b["train"]["final_loss"]
    assert {k: {m: v for m, v in e.items() if m != "timing"} for k, e in a["evals"].items()} == \
        {k: {m: v for m, v in e.items() if m != "timing"} for k, e in b["evals"].items()}
    wa, wb = _weights(straight), _weights(resumed)
    assert wa.keys() == wb.keys() and wa and all(torch.equal(wa[k], wb[k]) for k in wa)
    return b


@pytest.mark.slow
def test_a_launched_job_requeues_on_the_signal_and_resumes_exactly(straight, tmp_path, harness_cache, monkeypatch):
    """submitit's local executor (the SLURM code path in real subprocesses): the signal SLURM
    sends before the time limit reaches the running task in epoch 2; the task checkpoints the
    update boundary, requeues itself through submitit, the new attempt resumes there, and the
    final weights and metrics equal the uninterrupted run's."""
    import time

    from harness.jobs.expand import expand_jobs
    from harness.launch import records
    from harness.launch.config import LauncherConfig
    from harness.launch.submit import submit, wait_for
    from harness.store import RunStore

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    req = _request(harness_cache)
    jobs, store = expand_jobs(req), RunStore(tmp_path / "launched")
    config = LauncherConfig(executor="local", gpus_per_job=0, time="30", poll_s=0.5)
    submitted = submit(jobs, store, req, config, wait=True, log=lambda text: None)
    job_dir = store.job_dir(jobs[0])
    deadline = time.monotonic() + 600
    while not (job_dir / "work" / "epoch_1.pth").exists():  # epoch 2 is running
        assert time.monotonic() < deadline and not (job_dir / "metrics.json").exists()
        time.sleep(0.05)
    holder = json.loads((job_dir / "job.lock").read_text())
    os.kill(holder["pid"], signal.SIGUSR2)  # what SLURM's --signal=USR2@<s> does
    assert wait_for(submitted, config, log=lambda text: None) == {jobs[0].job_id: "done"}
    kinds = [e["kind"] for e in records.events(job_dir)]
    assert kinds == ["start", "requeue", "start"], kinds
    requeue = records.events(job_dir)[1]
    assert requeue["pid"] == holder["pid"] and "of epoch 2" in requeue["where"]
    assert records.events(job_dir)[2]["pid"] != holder["pid"]  # a new attempt, as after a SLURM requeue
    resumed = _same_result(straight, store.root)
    assert resumed["train"]["resumed"]["epoch"] == 1 and "update_in_epoch" in resumed["train"]["resumed"]
