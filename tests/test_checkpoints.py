"""Crash safety: exact resume, checkpoint fallbacks, one writer per job, and a chaos run."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import harness.engine.checkpoints as ckpt_mod
from harness.cli import main
from harness.engine.checkpoints import POINTER, choose_resume_checkpoint, load_best
from harness.errors import HarnessError
from harness.locks import FileLock, claim_jobs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--protocol", "base2novel", "--profile", "tiny", "--no-progress", "--set", "schedule.epochs=2",
        "--set", "schedule.warmup_epochs=1", "--set", "schedule.num_workers=0", "--set", "schedule.cpu_threads=1"]


def _trainable(out: Path) -> dict[str, torch.Tensor]:
    (path,) = out.glob("jobs/*/work/epoch_*.pth")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _record(out: Path) -> dict:
    (path,) = out.glob("jobs/*/metrics.json")
    return json.loads(path.read_text())["metrics"]


# -- exact resume ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("augment", [[], ["--set", "data.augment_on=device"]], ids=["cpu", "device-augment"])
def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, harness_cache, monkeypatch, augment):
    """Crash in the middle of epoch 2 (iteration 30 of 2 x 24); the rerun resumes from the epoch-1
    checkpoint and must end with exactly the uninterrupted run's adapter weights and metrics
    (also with the crops drawn from torch's RNG on the batch, `data.augment_on=device`)."""
    args = ["run", "--methods", "st_adapter", *TINY, *augment, "--cache", str(harness_cache)]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0

    seen = {"n": 0}

    def crash_at_30(name: str) -> None:
        if name == "train.iter":
            seen["n"] += 1
            if seen["n"] == 30:
                raise RuntimeError("simulated crash in epoch 2")

    monkeypatch.setattr(ckpt_mod, "fault_point", crash_at_30)
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 1
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 0

    straight, resumed = _record(tmp_path / "straight"), _record(tmp_path / "resumed")
    assert resumed["train"]["resumed"] == {"epoch": 1, "iter": 24, "exact": True}
    assert straight["train"]["resumed"] is False
    a, b = _trainable(tmp_path / "straight"), _trainable(tmp_path / "resumed")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["train"]["final_loss"] == resumed["train"]["final_loss"]
    assert _scores(straight["evals"]) == _scores(resumed["evals"])


def _scores(evals: dict) -> dict:
    """Evaluation results without wall-clock timing (accounting differs between any two runs)."""
    return {name: {k: v for k, v in ev.items() if k != "timing"} for name, ev in evals.items()}


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen, self.adapter = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def trainable_state_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}


def test_a_trainable_only_checkpoint_loads_completely(capfd):
    """Resuming must not report every frozen weight as missing (mmengine's "do not match exactly"):
    the state dict handed to mmengine is complete, and only a really absent tensor is reported."""
    from harness.engine.hooks import TrainableCheckpointHook

    model = _Model()
    checkpoint = {"state_dict": {"adapter.weight": torch.zeros(2, 2), "adapter.bias": torch.zeros(2)}}
    TrainableCheckpointHook._complete_state(SimpleNamespace(model=model), checkpoint)
    model.load_state_dict(checkpoint["state_dict"], strict=True)  # raises on any missing key
    assert torch.equal(model.adapter.weight, torch.zeros(2, 2)) and "lacks" not in capfd.readouterr().err

    checkpoint = {"state_dict": {"adapter.weight": torch.zeros(2, 2)}}
    TrainableCheckpointHook._complete_state(SimpleNamespace(model=model), checkpoint)
    assert "adapter.bias" not in checkpoint["state_dict"]
    assert "checkpoint lacks 1 trainable tensor(s) (adapter.bias)" in capfd.readouterr().err


# -- checkpoint fallbacks ----------------------------------------------------------------------
def _fake_checkpoint(path: Path, epoch: int, best: str | None = None) -> None:
    hub = {"runtime_info": {ckpt_mod.BEST_FILE: best} if best else {}}
    torch.save({"meta": {"epoch": epoch}, "state_dict": {"w": torch.ones(2)}, "message_hub": hub}, path)


def test_dangling_pointer_falls_back_to_the_previous_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path / "epoch_1.pth", 1)
    (tmp_path / POINTER).write_text("/elsewhere/work/epoch_2.pth")  # mmengine's removed-then-killed state
    path, notes = choose_resume_checkpoint(tmp_path, need_best=False)
    assert path == tmp_path / "epoch_1.pth"
    assert notes == ["epoch_2.pth is missing", "resumed from epoch_1.pth (epoch 1) instead"]


def test_truncated_checkpoint_falls_back_then_restarts(tmp_path):
    _fake_checkpoint(tmp_path / "epoch_1.pth", 1)
    _fake_checkpoint(tmp_path / "epoch_2.pth", 2)
    data = (tmp_path / "epoch_2.pth").read_bytes()
    (tmp_path / "epoch_2.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / POINTER).write_text("epoch_2.pth")
    path, notes = choose_resume_checkpoint(tmp_path, need_best=False)
    assert path == tmp_path / "epoch_1.pth" and "epoch_2.pth is unreadable" in notes[0]

    (tmp_path / "epoch_1.pth").write_bytes(b"")
    path, notes = choose_resume_checkpoint(tmp_path, need_best=False)
    assert path is None and notes[-1] == "no usable checkpoint; the job restarted from scratch"
    assert not list(tmp_path.iterdir())  # the unusable files are gone: the next run starts clean


def test_missing_best_file_is_not_a_usable_checkpoint_for_select_best(tmp_path):
    _fake_checkpoint(tmp_path / "epoch_2.pth", 2, best="best_base_top1_epoch_2.pth")
    (tmp_path / POINTER).write_text("epoch_2.pth")
    assert choose_resume_checkpoint(tmp_path, need_best=False)[0] == tmp_path / "epoch_2.pth"
    path, notes = choose_resume_checkpoint(tmp_path, need_best=True)
    assert path is None and notes[0] == "best_base_top1_epoch_2.pth is missing"


def test_select_best_without_a_best_checkpoint_is_an_error(tmp_path):
    runner = SimpleNamespace(message_hub=SimpleNamespace(get_info=lambda key, default=None: None))
    hook = ckpt_mod.SafeCheckpointHook(tmp_path, best_key="base/top1")
    with pytest.raises(HarnessError, match="no best checkpoint"):
        load_best(runner, hook)


# -- locks -------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from harness.locks import FileLock
lock = FileLock(Path(sys.argv[1]))
assert lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_keeps_the_lock_and_a_dead_one_loses_it(tmp_path):
    path = tmp_path / "job.lock"
    holder = _hold(path, 60)
    try:
        mine = FileLock(path)
        assert not mine.acquire()
        assert mine.holder["pid"] == holder.pid and mine.holder["host"] == socket.gethostname()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    mine = FileLock(path)
    assert mine.acquire()
    assert f"pid {holder.pid}" in mine.note and "is dead" in mine.note
    assert json.loads(path.read_text())["pid"] == os.getpid()
    mine.release()
    assert not path.exists()


def test_a_lock_without_heartbeat_is_stale_even_from_another_host(tmp_path):
    path = tmp_path / "job.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "token": "x"}))
    assert not FileLock(path, stale_after_s=60).acquire()  # fresh heartbeat: a live run elsewhere
    old = time.time() - 120
    os.utime(path, (old, old))
    lock = FileLock(path, stale_after_s=60)
    assert lock.acquire() and "no heartbeat for 120 s > 60 s" in lock.note
    lock.release()


def test_claim_jobs_skips_a_held_job_then_waits_for_it(tmp_path):
    jobs = [SimpleNamespace(job_id=name) for name in ("a", "b", "c")]
    holder = _hold(tmp_path / "b.lock", 1.5)
    lines: list[str] = []
    order = [job.job_id for _, job in claim_jobs(jobs, lambda job: tmp_path / f"{job.job_id}.lock",
                                                  lambda job, lock: None, poll_s=0.1, log=lines.append)]
    holder.wait()
    assert order == ["a", "c", "b"]
    assert f"held by another live run (pid {holder.pid}" in lines[0] and lines[1].startswith("waiting for 1 job")
    assert not list(tmp_path.glob("*.lock"))


# -- chaos -------------------------------------------------------------------------------------
CHAOS = ["run", "--methods", "st_adapter", "--splits", "1,2", "--protocol", "base2novel", "--profile", "tiny",
         "--pretrained", "random",  # no synthetic pretraining in the test cache: the chaos is what is timed
         "--no-progress", "--set", "schedule.epochs=3", "--set", "schedule.warmup_epochs=1",
         "--set", "schedule.select=best", "--set", "schedule.val_interval=1", "--set", "schedule.num_workers=0",
         "--set", "schedule.cpu_threads=1"]


def _cli(out: Path, cache: Path, faults: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_FAULT_POINTS", None)
    if faults:
        env["HARNESS_FAULT_POINTS"] = faults
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *CHAOS, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode


@pytest.mark.slow
def test_chaos_kills_then_reruns_match_an_uninterrupted_run(tmp_path, harness_cache):
    """Seeded kill -9 points (training steps, inside checkpoint saving, between checkpoint and
    pointer, result and summary writes); rerun until done; same summary, metrics and weights."""
    straight, chaos = tmp_path / "straight", tmp_path / "chaos"
    assert _cli(straight, harness_cache) == 0
    rng = random.Random(11)
    plan = [f"train.iter:{rng.randint(10, 60)}", f"atomic.before_rename:{rng.randint(3, 8)}",
            f"ckpt.before_pointer:{rng.randint(1, 3)}", f"ckpt.before_remove:{rng.randint(1, 3)}"]
    killed = sum(_cli(chaos, harness_cache, faults) != 0 for faults in plan)
    for _ in range(3):
        if _cli(chaos, harness_cache) == 0:
            break
    assert killed == len(plan)  # every planned point was reached: the run really was interrupted
    assert (chaos / "summary.md").read_text() == (straight / "summary.md").read_text()
    resumed = []
    for job_dir in sorted((straight / "jobs").iterdir()):
        other = chaos / "jobs" / job_dir.name
        a, b = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (job_dir, other))
        assert _scores(a["evals"]) == _scores(b["evals"]) and a["train"]["final_loss"] == b["train"]["final_loss"]
        assert a["train"]["selected"] == b["train"]["selected"]
        resumed.append(b["train"]["resumed"])
        wa, wb = (torch.load(d / "work" / "epoch_3.pth", map_location="cpu", weights_only=False)["state_dict"]
                  for d in (job_dir, other))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert sorted(p.name for p in (other / "work").glob("*.pth")) == sorted(
            p.name for p in (job_dir / "work").glob("*.pth"))  # no spare checkpoints left behind
    assert any(resumed)
    assert not list(chaos.rglob("*.part")) and not list(chaos.rglob("*.lock*"))
    for path in chaos.rglob("*.json"):
        if "work" not in path.relative_to(chaos).parts:  # mmengine's own logs there are JSON lines
            json.loads(path.read_text())
