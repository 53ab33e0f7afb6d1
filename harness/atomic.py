"""Atomic file writes: the one place that writes through a temp file in the target's folder and
renames it into place, so a reader (or a later run after a crash or kill) sees the old file or
the new one, never a prefix. Stdlib only: usable from every layer, the GPU benchmark included."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.faults import fault_point

TEMP_GLOB = ".*.part"  # what atomic_write leaves behind when the process is killed mid-write


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file next to `path`, flush it to disk, rename it to `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        fault_point("atomic.before_rename")
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power loss must not resurrect the old file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete temp files a killed writer left in `folder`. Only call it while holding the lock
    of everything written there (another live writer's temp file would vanish under it)."""
    root = Path(folder)
    found = list(root.rglob(TEMP_GLOB) if recursive else root.glob(TEMP_GLOB))
    for path in found:
        path.unlink(missing_ok=True)
    return found


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8, newlines written as given (no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    options = {"indent": 2, "sort_keys": True, "default": str, **dump_kwargs}
    atomic_write_text(path, json.dumps(obj, **options) + "\n")


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))
