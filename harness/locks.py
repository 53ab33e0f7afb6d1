"""One writer per job: lock files that appear complete or not at all (a record written to a temp
file, then hard-linked into place: `link` fails if the lock exists, atomically, on local and
network filesystems alike; no flock: it is unreliable on network filesystems, where results
folders of cluster runs usually live).

A lock file is JSON {pid, host, started, token, heartbeat_s, stale_after_s}; its modification time
is the heartbeat, refreshed every `heartbeat_s` by a daemon thread of the holder. Another process
treats the lock as stale, and takes it over with a note, when the holder is a dead pid on this host,
the heartbeat is older than `stale_after_s` (default 600 s, env HARNESS_LOCK_STALE_S), or the file
is empty or unreadable (no holder ever leaves it so: a crash or a full disk while an older version
wrote it); otherwise the job is held by a live run and is left alone. A lock that cannot be
created (a full disk, a read-only folder) is one line naming the file and what to do. Under
torchrun only rank 0 touches lock files and broadcasts its decisions, so every rank runs the same
jobs.

A launcher task (harness/launch/task.py) sets `HARNESS_LAUNCHER_JOB` to its scheduler job id; the
lock records it, and a later attempt of the same scheduler job (a requeue: the scheduler never
runs two attempts of one job at once) takes over the earlier attempt's lock at once instead of
waiting for its heartbeat to go stale on another node.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, os_error_hint
from harness.faults import fault_point

#: errno values of `link` on a file system without hard links (then O_EXCL creation is used).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}

HEARTBEAT_S = 20.0
STALE_AFTER_S = float(os.environ.get("HARNESS_LOCK_STALE_S", "600"))
JOB_LOCK = "job.lock"
LAUNCHER_JOB_ENV = "HARNESS_LAUNCHER_JOB"
FOLDER_LOCK = ".folder.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(info: dict[str, Any]) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {started}"


@dataclass
class FileLock:
    """An O_EXCL lock file with a heartbeat thread; `acquire()` returns False while a live
    process holds it. `note` says what happened to a stale lock that was taken over."""

    path: Path
    stale_after_s: float = STALE_AFTER_S
    heartbeat_s: float = HEARTBEAT_S
    note: str | None = None
    holder: dict[str, Any] | None = None  # who holds it when acquire() failed
    _token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "token": self._token,
                  "heartbeat_s": self.heartbeat_s, "stale_after_s": self.stale_after_s}
        if os.environ.get(LAUNCHER_JOB_ENV):
            record["launcher_job"] = os.environ[LAUNCHER_JOB_ENV]
        return record

    def _create(self, path: Path) -> bool:
        """Create `path` holding this lock's record, complete from the moment it exists; False if
        it exists already. A file system error (full, read-only) is one line (HarnessError)."""
        tmp = path.with_name(f".{path.name}.{self._token}.tmp")
        try:
            with open(tmp, "w") as handle:
                fault_point("lock.create")
                handle.write(json.dumps(self._record()) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in _NO_HARD_LINKS:
                    raise
                return self._create_exclusive(path)
            return True
        except OSError as err:
            raise HarnessError(f"cannot create the lock file {path} ({err.strerror or err}): "
                               f"{os_error_hint(err, 'check the folder')}, then rerun the same command "
                               "(finished jobs are kept)") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self, path: Path) -> bool:
        """`_create` on a file system without hard links: O_EXCL, then the record (a reader may
        see the file empty for the instant between the two)."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(self._record()) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            path.unlink(missing_ok=True)  # never leave an empty lock behind
            raise
        return True

    def read(self) -> tuple[dict[str, Any] | None, float]:
        """(content or None if unreadable / half-written, seconds since the last heartbeat);
        (None, -1) when there is no lock file."""
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None, -1.0
        try:
            info = json.loads(text)
        except ValueError:
            return None, age
        return (info if isinstance(info, dict) else None), age

    def _stale_reason(self, info: dict[str, Any] | None, age: float) -> str | None:
        if info is None:  # a holder's lock is complete from the moment it exists (`_create`)
            return "the lock file is empty or unreadable: no live run holds it (left by a crash or a full disk)"
        mine = os.environ.get(LAUNCHER_JOB_ENV)
        if mine and info.get("launcher_job") == mine and info.get("token") != self._token:
            return f"its holder was an earlier attempt of scheduler job {mine} (requeued)"
        if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
            return f"its holder ({describe_holder(info)}) is dead"
        if age > self.stale_after_s:
            who = describe_holder(info) if info else "unreadable lock"
            return f"no heartbeat for {age:.0f} s > {self.stale_after_s:.0f} s ({who})"
        return None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create(self.path):
            return self._started()
        info, age = self.read()
        if age < 0:  # released between our attempt and the read
            return self._create(self.path) and self._started()
        reason = self._stale_reason(info, age)
        if reason is None:
            self.holder = info or {}
            return False
        if not self._take_over(info):
            self.holder = info or {}
            return False
        self.note = f"took over stale lock {self.path}: {reason}"
        return self._started()

    def _take_over(self, seen: dict[str, Any] | None) -> bool:
        """Replace the stale lock we saw, unless another process replaced it first. A short
        O_EXCL guard serialises contenders, so none removes a lock that was just retaken."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not self._create(guard):
            try:
                if time.time() - guard.stat().st_mtime > 60:  # a contender died inside this window
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            now, _ = self.read()
            if (now or {}).get("token") != (seen or {}).get("token"):
                return False
            self.path.unlink(missing_ok=True)
            return self._create(self.path)
        finally:
            guard.unlink(missing_ok=True)

    def _started(self) -> bool:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        info, _ = self.read()
        if info is not None and info.get("token") == self._token:
            self.path.unlink(missing_ok=True)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _broadcast(value: Any) -> Any:
    from harness.distributed import broadcast_from_rank0

    return broadcast_from_rank0(value)


@contextlib.contextmanager
def folder_lock(folder: Path, wait_s: float = 120.0, poll_s: float = 0.2) -> Iterator[FileLock | None]:
    """Short exclusive section over a results folder (summary tables, invocation records).
    Waits for a live holder up to `wait_s`, then proceeds anyway with a warning: a summary is
    regenerated from metrics.json files, so a lost race costs nothing but a redraw."""
    if _rank() != 0:
        yield None
        return
    lock = FileLock(Path(folder) / FOLDER_LOCK, stale_after_s=min(STALE_AFTER_S, 120.0), heartbeat_s=5.0)
    deadline = time.monotonic() + wait_s
    held = lock.acquire()
    while not held and time.monotonic() < deadline:
        time.sleep(poll_s)
        held = lock.acquire()
    if not held:
        print(f"harness: warning: {lock.path} still held by {describe_holder(lock.holder or {})}; "
              "writing anyway", file=sys.stderr)
    try:
        yield lock if held else None
    finally:
        if held:
            lock.release()


def claim_jobs(jobs: Iterable[Any], lock_path: Callable[[Any], Path], on_claim: Callable[[Any, FileLock], None],
               poll_s: float = 2.0, log: Callable[[str], None] | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (number, job) for each job whose lock this process holds; the lock is held until the
    caller asks for the next job (or closes the generator). Jobs held by another live run are
    skipped in the first pass and said so; afterwards this run waits for them, so it ends with
    the same table as that run (and trains a job itself only if the other run let it go
    unfinished). `on_claim(job, lock)` runs right after a lock is taken (rank 0 only)."""
    log = log or (lambda text: print(text, file=sys.stderr))
    numbered = list(enumerate(jobs, 1))
    deferred: list[tuple[int, Any]] = []
    queue = list(numbered)
    waiting = False
    while True:
        decision: tuple[int, FileLock | None] | None = None
        if _rank() == 0:
            decision = _next_claim(queue, deferred, lock_path, log, len(numbered))
            if decision is None and deferred:
                if not waiting:
                    log(f"waiting for {len(deferred)} job(s) held by other live runs: "
                        + ", ".join(job.job_id for _, job in deferred))
                    waiting = True
                while decision is None and deferred:
                    time.sleep(poll_s)
                    queue, deferred = deferred, []
                    decision = _next_claim(queue, deferred, lock_path, None, len(numbered))
        index = _broadcast(None if decision is None else decision[0])
        if index is None:
            return
        number, job = numbered[index]
        lock = decision[1] if decision is not None else None
        try:
            if lock is not None:
                if lock.note:
                    log(f"  {lock.note}")
                on_claim(job, lock)
            yield number, job
        finally:
            if lock is not None:
                lock.release()


def _next_claim(queue: list[tuple[int, Any]], deferred: list[tuple[int, Any]], lock_path: Callable[[Any], Path],
                log: Callable[[str], None] | None, total: int) -> tuple[int, FileLock] | None:
    """Pop jobs off `queue` until one can be locked (returns its index and lock); a job held by
    a live process goes to `deferred` (and is reported through `log`)."""
    while queue:
        number, job = queue.pop(0)
        lock = FileLock(lock_path(job))
        if lock.acquire():
            return number - 1, lock
        deferred.append((number, job))
        if log is not None:
            log(f"[{number}/{total}] {job.job_id}: held by another live run "
                f"({describe_holder(lock.holder or {})}), skipped for now")
    return None


def lock_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """What a reader such as `harness status` sees at a lock file: (its holder's record, or None
    when there is no lock; why it is stale, or None while its holder is alive). Takes nothing."""
    lock = FileLock(Path(path))
    info, age = lock.read()
    if age < 0:
        return None, None
    return info or {}, lock._stale_reason(info, age)
