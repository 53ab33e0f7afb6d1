"""A cheap container-header probe of video files, cached by (path, size, mtime).

Why: a corrupt, truncated, empty or mislabelled video must be found before the first training
step of a run, not by a DataLoader worker hours later; decoding every listed video up front
would cost as much as an epoch. Reading a file's container structure costs a few small reads:
MP4/MOV top-level atoms must tile the file and include `moov` (a truncated download loses its
tail atoms or cuts one short), AVI's RIFF size must fit the file, Matroska/WebM must start with
its EBML magic. The container is recognised by its first bytes, not by the file name (decoders
read an MP4 named `.avi`); a file named like a known container whose bytes are none of them is
reported. Formats without a known layout only need to exist and be non-empty. Full decoding
stays in `harness data check`.

Stdlib only; the verdicts are remembered in `<cache>/video-probe.json` under the file's
absolute path, size and mtime, so a replaced file is probed again and an unchanged one never;
saved under a lock (`.video-probe.lock`), which also lets a save clear what a killed writer left.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from harness.atomic import atomic_write_json
from harness.errors import HarnessError
from harness.locks import FileLock
from harness.paths import cache_root

_CACHE_NAME = "video-probe.json"
_LOCK_NAME = ".video-probe.lock"
#: Bumped when the probe's rules change, so older cached verdicts are not trusted.
PROBE_VERSION = 2
_MP4_EXTS = {".mp4", ".m4v", ".mov", ".3gp"}
_MKV_EXTS = {".mkv", ".webm"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_MP4_ATOMS = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"meta", b"styp",
              b"sidx", b"moof", b"mfra", b"pdin", b"prfl", b"udta"}


def probe_video(path: str | os.PathLike) -> str | None:
    """None if the file looks like a complete video container; else the reason it does not."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(p, "rb") as handle:
            head = handle.read(12)
            handle.seek(0)
            if head[4:8] in _MP4_ATOMS:
                return _probe_mp4(handle, size)
            if head[:4] == b"RIFF":
                return _probe_avi(handle, size)
            if head[:4] == _EBML_MAGIC:
                return None
            ext = p.suffix.lower()
            if ext in _MP4_EXTS:
                return "not an MP4/MOV file (no ftyp/moov atom at the start)"
            if ext == ".avi":
                return "not an AVI file (no RIFF/AVI header)"
            if ext in _MKV_EXTS:
                return "not a Matroska/WebM file (no EBML header)"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None


def _probe_mp4(handle, size: int) -> str | None:
    """Walk the top-level atoms: each must be a known type whose size fits the file; `moov` required."""
    offset, seen = 0, set()
    while offset < size:
        handle.seek(offset)
        header = handle.read(16)
        if len(header) < 8:
            return f"truncated: {size - offset} stray byte(s) after the last atom at offset {offset}"
        length, kind = struct.unpack(">I4s", header[:8])
        if length == 1 and len(header) == 16:
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:
            length = size - offset  # the atom runs to the end of the file
        if offset == 0 and kind not in _MP4_ATOMS:
            return "not an MP4/MOV file (no ftyp/moov atom at the start)"
        if length < 8 or not kind.isascii():
            return f"corrupt atom {kind!r} at offset {offset}"
        if offset + length > size:
            return (f"truncated: atom {kind.decode('ascii', 'replace')!r} at offset {offset} needs "
                    f"{length} bytes, the file ends after {size - offset}")
        seen.add(kind)
        offset += length
    return None if b"moov" in seen or b"moof" in seen else "no 'moov' atom (incomplete download or not a video)"


def _probe_avi(handle, size: int) -> str | None:
    header = handle.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"AVI ":
        return "not an AVI file (no RIFF/AVI header)"
    declared = struct.unpack("<I", header[4:8])[0] + 8
    if declared > size:
        return f"truncated: the RIFF header declares {declared} bytes, the file has {size}"
    return None


class ProbeCache:
    """Verdicts of `probe_video`, persisted under the harness cache (a damaged cache is ignored)."""

    def __init__(self, cache_dir: str | os.PathLike | None) -> None:
        self.path = cache_root(cache_dir) / _CACHE_NAME
        self.known: dict[str, str | None] = self._saved()
        self.dirty = False

    def check(self, path: Path) -> str | None:
        """The probe's verdict for `path` (which must exist), from the cache when unchanged."""
        resolved = path.resolve()
        stat = resolved.stat()
        key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.known:
            self.known[key] = probe_video(resolved)
            self.dirty = True
        return self.known[key]

    def save(self) -> None:
        """Write the verdicts, merged with those another run saved meanwhile, under the cache's
        lock; temp files of a writer killed mid-write (`.video-probe.json.*.part`) are removed
        then (no live writer exists while the lock is held). Another run saving at the same
        moment: skipped (only a cache; the verdicts are found again next time)."""
        if not self.dirty:
            return
        lock = FileLock(self.path.with_name(_LOCK_NAME))
        try:
            if not lock.acquire():
                return
        except HarnessError:  # a full disk or a read-only cache: only a cache
            return
        try:
            for stale in self.path.parent.glob(f".{_CACHE_NAME}.*.part"):
                stale.unlink(missing_ok=True)
            merged = {**self._saved(), **self.known}
            atomic_write_json(self.path, {"version": PROBE_VERSION, "verdicts": merged}, indent=None)
            self.dirty = False
        except OSError:  # only a cache
            pass
        finally:
            lock.release()

    def _saved(self) -> dict[str, str | None]:
        """The verdicts on disk now (another run may have added some since this one started)."""
        try:
            data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            return {}
        return data.get("verdicts", {}) if isinstance(data, dict) and data.get("version") == PROBE_VERSION else {}
