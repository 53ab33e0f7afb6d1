"""Lock files and a full disk (harness/locks.py), with the fault-injection points of
harness/faults.py instead of a real full disk: creating a lock on a full disk is one line, leaves
no empty lock behind, and an empty or unreadable lock (what an older version left after ENOSPC)
is stale at once instead of being waited out."""
from __future__ import annotations

import errno
import json
import time

import pytest

from harness import faults
from harness.cli import main
from harness.errors import HarnessError
from harness.locks import FOLDER_LOCK, FileLock, folder_lock


def test_the_fault_plan_raises_the_named_os_error_from_its_count_on():
    with faults.injected("lock.create:2:ENOSPC"):
        faults.fault_point("lock.create")  # 1st pass: nothing
        for _ in range(2):  # the disk stays full
            with pytest.raises(OSError) as raised:
                faults.fault_point("lock.create")
            assert raised.value.errno == errno.ENOSPC and raised.value.strerror == "No space left on device"
    faults.fault_point("lock.create")  # the plan is gone with the block
    with pytest.raises(ValueError, match="no errno name"):
        faults._parse("lock.create:1:ENOSPACE")


def test_a_lock_on_a_full_disk_is_one_line_and_leaves_no_lock_file(tmp_path):
    lock = FileLock(tmp_path / "job.lock")
    with faults.injected("lock.create:1:ENOSPC"), pytest.raises(HarnessError) as raised:
        lock.acquire()
    text = str(raised.value)
    assert text.count("\n") == 0 and f"cannot create the lock file {tmp_path / 'job.lock'} (No space left" in text
    assert "the disk is full: free space, then rerun the same command" in text
    assert list(tmp_path.iterdir()) == []  # neither the lock nor its temp file stays behind
    assert lock.acquire()  # space freed: taken at once
    lock.release()


@pytest.mark.parametrize("content", ["", "{\"pid\": 12", "[1, 2]"])
def test_an_empty_or_unreadable_lock_is_stale_at_once(tmp_path, content):
    """The 127-s wait of issue 22: a 0-byte .folder.lock (ENOSPC while an older version wrote it)
    was waited out as if a live run held it. Now it is taken over at once, with a note."""
    (tmp_path / FOLDER_LOCK).write_text(content)
    start = time.monotonic()
    with folder_lock(tmp_path, wait_s=30) as lock:
        assert lock is not None and "empty or unreadable" in lock.note
        assert json.loads((tmp_path / FOLDER_LOCK).read_text())["token"]
    assert time.monotonic() - start < 5 and not (tmp_path / FOLDER_LOCK).exists()


def test_a_run_into_a_full_disk_is_one_line_then_the_next_run_does_not_wait(harness_cache, tmp_path, capsys,
                                                                            skip_training):
    argv = ["run", "--methods", "zeroshot", "--protocol", "base2novel", "--profile", "tiny", "--pretrained",
            "random", "--no-progress", "--cache", str(harness_cache), "--out", str(tmp_path)]
    with faults.injected("lock.create:1:ENOSPC"):  # every lock of the run: the probe cache's (only a cache:
        assert main(argv) == 2                      # skipped), then the results folder's
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert errors == [f"harness: error: cannot create the lock file {tmp_path / FOLDER_LOCK} (No space left on "
                      "device): the disk is full: free space, then rerun the same command (finished jobs are kept)"]
    assert "Traceback" not in err and not (tmp_path / FOLDER_LOCK).exists()
    start = time.monotonic()
    assert main(argv) == 0
    assert time.monotonic() - start < 60 and "still held" not in capsys.readouterr().err
