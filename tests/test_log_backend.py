"""`--set log.backend=...`: validated before any job starts, never part of a job's identity,
and (TensorBoard, when installed) an event file with the training loss in the job's work dir."""
from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.jobs.identity import EXECUTION_ONLY_KEYS
from harness.settings import parse_set_args


def test_log_backend_is_checked_and_execution_only():
    _, schedule, _ = parse_set_args(["log.backend=local"], ["zeroshot"])
    assert schedule == {"log_backend": "local"} and "log_backend" in EXECUTION_ONLY_KEYS
    with pytest.raises(HarnessError, match="choose one of local, tensorboard, wandb, mlflow"):
        parse_set_args(["log.backend=visdom"], ["zeroshot"])
    with pytest.raises(HarnessError, match="unknown log setting"):
        parse_set_args(["log.dir=x"], ["zeroshot"])


@pytest.mark.slow
def test_tensorboard_event_file_holds_the_loss(tmp_path, harness_cache):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["run", "--methods", "st_adapter", "--protocol", "base2novel", "--profile", "tiny", "--cache",
            str(harness_cache), "--out", str(tmp_path), "--no-progress", "--set", "log.backend=tensorboard"]
    assert main(args) == 0
    (events,) = tmp_path.glob("jobs/*/work/*/vis_data/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert "loss" in accumulator.Tags()["scalars"] and len(accumulator.Scalars("loss")) >= 1
