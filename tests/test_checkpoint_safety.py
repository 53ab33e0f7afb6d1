"""Checkpoints of this project (`.harness.pt` conversions, run checkpoints with optimizer and RNG
state) are tensors and plain data, read with `torch.load(weights_only=True)`: a shared file whose
pickle would run code is refused by `predict`, `eval` and resume with one line, and the code never
runs (its payload would create a marker file)."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.engine.checkpoints import (
    choose_resume_checkpoint,
    from_plain,
    load_run_checkpoint,
    safe_uri,
    to_plain,
)
from harness.safe_load import ForeignCode


class RunsCode:
    """Unpickling this calls os.system (what a crafted checkpoint's __reduce__ does)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path):
    """(a crafted .harness.pt, a crafted run checkpoint inside a job folder, the marker file)."""
    marker = tmp_path / "code-ran"
    converted = tmp_path / "shared.harness.pt"
    torch.save({"state_dict": {}, "meta": {"format": "harness-converted/1", "extra": RunsCode(marker)}}, converted)
    work = tmp_path / "results" / "jobs" / "st_adapter-s1-seed0-0123abcd" / "work"
    work.mkdir(parents=True)
    (work.parent / "config.json").write_text('{"job": {}}')
    run_ckpt = work / "epoch_1.pth"
    torch.save({"meta": {"epoch": 1, "backbone": {}}, "state_dict": {}, "message_hub": RunsCode(marker)}, run_ckpt)
    return converted, run_ckpt, marker


def _one_line_refusal(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "\n" not in err, err
    assert "refused: its pickle names posix.system" in err and "nothing from the file was executed" in err
    return err


@pytest.mark.parametrize("which", ["converted", "run"])
def test_predict_and_eval_refuse_a_checkpoint_that_runs_code(crafted, which, tmp_path, capsys):
    path = crafted[0] if which == "converted" else crafted[1]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(path), "--classes", "a,b", str(tmp_path / "any.mp4")]) == 2
    _one_line_refusal(capsys)
    assert main(["eval", "--checkpoint", str(path), "--protocol", "base2novel", "--profile", "tiny",
                 "--out", str(tmp_path / "eval")]) == 2
    _one_line_refusal(capsys)
    assert not crafted[2].exists()


def test_resume_refuses_a_checkpoint_that_runs_code(crafted):
    """The job restarts from scratch, saying why; mmengine's loader of the resume path (the
    `harness-safe://` scheme) refuses the file as well."""
    _, run_ckpt, marker = crafted
    (run_ckpt.parent / "last_checkpoint").write_text(run_ckpt.name)
    with pytest.raises(ForeignCode):
        from mmengine.runner.checkpoint import CheckpointLoader

        CheckpointLoader.load_checkpoint(safe_uri(run_ckpt), map_location="cpu")
    chosen, notes = choose_resume_checkpoint(run_ckpt.parent, need_best=False)
    assert chosen is None and notes[0].startswith("epoch_1.pth refused: its pickle names posix.system")
    assert "restarted from scratch" in notes[-1] and not run_ckpt.exists()
    assert not marker.exists()


def test_run_checkpoint_state_is_stored_as_plain_data(tmp_path):
    """RNG states (numpy's uint32 key), numpy scalars and mmengine's HistoryBuffers survive a
    weights-only round trip exactly."""
    from mmengine.logging import HistoryBuffer

    np.random.seed(3)
    random.seed(4)
    buffer = HistoryBuffer()
    for value in (0.5, 0.25, np.float64(1.5)):
        buffer.update(value)
    checkpoint = {"meta": {"epoch": 2, "harness_rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                                         "python": random.getstate()}},
                  "state_dict": {"net.w": torch.ones(2)},
                  "message_hub": {"log_scalars": {"train/loss": buffer}, "runtime_info": {"eta": np.float64(3.5)}}}
    path = tmp_path / "epoch_2.pth"
    torch.save(to_plain(checkpoint), path)
    torch.load(path, weights_only=True)  # no error: tensors and plain data only
    loaded = load_run_checkpoint(path)
    rng = loaded["meta"]["harness_rng"]["numpy"]
    assert rng[1].dtype == np.uint32 and np.array_equal(rng[1], np.random.get_state()[1])
    np.random.set_state(rng)
    assert np.random.rand() == (np.random.seed(3), np.random.rand())[1]
    assert loaded["meta"]["harness_rng"]["python"] == random.getstate()
    restored = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(restored, HistoryBuffer) and restored.data[0].tolist() == [0.5, 0.25, 1.5]
    assert loaded["message_hub"]["runtime_info"]["eta"] == 3.5
    assert from_plain(to_plain([1, (2.0, "x")])) == [1, (2.0, "x")]
    with pytest.raises(Exception, match="cannot be stored"):
        to_plain({"x": object()})
