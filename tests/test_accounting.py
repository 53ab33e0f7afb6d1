"""Per-job accounting (harness.engine.accounting): data-wait fraction, clips/s, GPU-hours, peak
memory, and their per_job.csv columns, checked against values known by construction."""
from __future__ import annotations

import time

import pytest
import torch

from harness.engine import accounting
from harness.engine.accounting import EvalTimer, JobAccounting, accounting_columns

DATA_S, STEP_S = 0.03, 0.09  # per item: the data loader sleeps DATA_S, the model step STEP_S
EXPECTED_WAIT = DATA_S / (DATA_S + STEP_S)  # 0.25
ITEMS = 12


class SleepyData(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return ITEMS

    def __getitem__(self, i: int) -> dict:
        time.sleep(DATA_S)
        return {"inputs": torch.zeros(1), "data_samples": i}


def test_training_data_wait_from_mmengine_timer(tmp_path):
    """mmengine's IterTimerHook data_time vs time, summed by StepTimerHook: a loader that takes
    DATA_S per batch and a step that takes STEP_S wait DATA_S / (DATA_S + STEP_S) of the time."""
    from mmengine.model import BaseDataPreprocessor, BaseModel
    from mmengine.runner import Runner

    from harness.engine.hooks import StepTimerHook

    class SleepyModel(BaseModel):
        def __init__(self) -> None:
            # an instance, not a registry lookup: an earlier test may have left mmaction as the
            # default scope, whose registry would import mmaction.models (broken in 1.2.0)
            super().__init__(data_preprocessor=BaseDataPreprocessor())
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs, data_samples=None, mode="tensor"):
            time.sleep(STEP_S)
            return {"loss": (self.w ** 2).sum()}

    runner = Runner(model=SleepyModel(), work_dir=str(tmp_path),
                    train_dataloader=dict(dataset=SleepyData(), batch_size=1, num_workers=0,
                                          sampler=dict(type="DefaultSampler", shuffle=False),
                                          collate_fn=dict(type="pseudo_collate")),
                    train_cfg=dict(by_epoch=True, max_epochs=1), optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.0)),
                    default_hooks=dict(timer=dict(type="IterTimerHook"), checkpoint=None, logger=None),
                    default_scope="mmengine", log_level="ERROR")
    runner.register_hook(hook := StepTimerHook())
    runner.train()
    out = hook.summary()
    assert out["steps"] == ITEMS and out["clips"] == ITEMS  # one clip per batch
    assert out["seconds"] >= ITEMS * (DATA_S + STEP_S)
    assert out["data_wait_fraction"] == pytest.approx(EXPECTED_WAIT, abs=0.05)
    assert out["clips_per_second"] == pytest.approx(ITEMS / out["seconds"], rel=1e-3)


def test_training_clips_are_the_whole_update_s_over_all_processes():
    """A process loads its share of an update; the clips counted are the update's (all processes),
    so a 2-process job counts the clips a 1-process job counts, short last batch included."""
    from types import SimpleNamespace

    from harness.engine.batches import UpdateShare
    from harness.engine.hooks import StepTimerHook

    hub = SimpleNamespace(get_scalar=lambda name: SimpleNamespace(current=lambda: 0.5))
    share = UpdateShare(epoch=0, update=3, indices=(4, 5, 6), seeds=(1, 2, 3), batch_labels=(0, 1, 0, 1, 1),
                        update_seed=0)
    hook = StepTimerHook()
    hook.after_train_iter(SimpleNamespace(message_hub=hub), 0, data_batch={"inputs": [0, 1, 2], "update": share})
    assert hook.summary()["clips"] == 5 and hook.summary()["steps"] == 1


def test_evaluation_timer_splits_data_wait_from_compute():
    timer = EvalTimer()
    loader = torch.utils.data.DataLoader(SleepyData(), batch_size=2, collate_fn=lambda items: {
        "inputs": [x["inputs"] for x in items]})
    for _ in timer.batches(loader):
        time.sleep(STEP_S)
    out = timer.summary()
    assert out["steps"] == ITEMS // 2 and out["clips"] == ITEMS
    # per batch: 2 items of DATA_S, then one step of STEP_S
    assert out["data_wait_fraction"] == pytest.approx(2 * DATA_S / (2 * DATA_S + STEP_S), abs=0.05)
    assert out["seconds"] >= ITEMS * DATA_S + ITEMS // 2 * STEP_S


def test_gpu_hours_device_and_cuda_peak(monkeypatch):
    """4 GPU processes for two hours are 8 GPU-hours; CUDA's counter is the peak memory."""
    clock = iter([100.0, 100.0 + 7200.0])
    monkeypatch.setattr(accounting.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Test GPU 80GB")
    acc = JobAccounting(torch.device("cuda", 0), processes=4).finish(None, [])
    assert acc["wall_seconds"] == 7200.0 and acc["gpus"] == 4 and acc["gpu_hours"] == 8.0
    assert acc["device"] == "Test GPU 80GB"
    assert (acc["peak_memory_bytes"], acc["peak_memory_kind"]) == (3 * 2**30, "cuda_max_allocated")
    assert acc["train"] is None and acc["eval"] is None


def test_cpu_job_has_zero_gpu_hours_and_sums_evaluations():
    evals = [{"seconds": 2.0, "data_seconds": 0.5, "steps": 4, "clips": 10},
             {"seconds": 3.0, "data_seconds": 2.0, "steps": 6, "clips": 40}, None]
    acc = JobAccounting(torch.device("cpu"), processes=2).finish({"clips_per_second": 5.0}, evals)
    assert acc["gpus"] == 0 and acc["gpu_hours"] == 0.0 and acc["device"].startswith("cpu: ")
    assert acc["eval"]["clips"] == 50 and acc["eval"]["steps"] == 10
    assert acc["eval"]["clips_per_second"] == 10.0 and acc["eval"]["data_wait_fraction"] == 0.5  # 50/5, 2.5/5


def test_cpu_peak_memory_is_the_max_rss():
    """Touching 256 MiB above the current resident size raises the process's max RSS past it."""
    np = pytest.importorskip("numpy")
    try:
        with open("/proc/self/statm") as handle:
            resident = int(handle.read().split()[1]) * __import__("os").sysconf("SC_PAGE_SIZE")
    except OSError:
        pytest.skip("needs /proc (Linux)")
    block = np.ones(256 * 2**20, dtype=np.uint8)
    peak, kind = accounting.peak_memory(torch.device("cpu"))
    assert kind == "process_max_rss" and peak >= resident + 0.9 * block.nbytes


def test_report_columns_and_older_results():
    metrics = {"accounting": {"wall_seconds": 12.5, "device": "cpu: x", "gpu_hours": 0.0, "peak_memory_bytes": 3 * 2**20,
                              "peak_memory_kind": "process_max_rss",
                              "train": {"clips_per_second": 8.0, "data_wait_fraction": 0.25},
                              "eval": {"clips_per_second": 20.0, "data_wait_fraction": 0.5}}}
    cols = accounting_columns(metrics)
    assert cols == {"wall_s": 12.5, "train_clips_per_s": 8.0, "train_data_wait": 0.25, "eval_clips_per_s": 20.0,
                    "eval_data_wait": 0.5, "device": "cpu: x", "gpu_hours": 0.0, "peak_mem_mib": 3.0,
                    "peak_mem_kind": "process_max_rss"}
    assert set(accounting_columns({}).values()) == {None}  # results written before accounting existed
