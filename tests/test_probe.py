"""The container-header probe recognises a container by its bytes, not by its file name."""
from __future__ import annotations

import struct

from harness.data.probe import probe_video


def _mp4_bytes() -> bytes:
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x02\x00"
    moov = struct.pack(">I4s", 8, b"moov")
    return ftyp + moov


def test_mp4_content_named_avi_is_a_video(tmp_path):
    path = tmp_path / "clip.avi"  # the real-layout lists name MP4 content .avi; decoders read it
    path.write_bytes(_mp4_bytes())
    assert probe_video(path) is None


def test_truncated_mp4_named_avi_is_reported(tmp_path):
    path = tmp_path / "clip.avi"
    path.write_bytes(_mp4_bytes()[:-4])
    assert "truncated" in probe_video(path)


def test_random_bytes_named_like_a_container_are_reported(tmp_path):
    for name, fragment in (("a.avi", "not an AVI file"), ("a.mp4", "not an MP4/MOV file"),
                           ("a.webm", "not a Matroska/WebM file")):
        path = tmp_path / name
        path.write_bytes(b"\x00\x01\x02\x03 no container here")
        assert fragment in probe_video(path)


def test_riff_that_is_not_avi_is_reported(tmp_path):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4) + b"WAVE")
    assert "not an AVI file" in probe_video(path)


KILLED_WRITER = """
import sys
from pathlib import Path
from harness.data.probe import ProbeCache
cache = ProbeCache(sys.argv[1])
cache.check(Path(sys.argv[2]))
cache.save()  # HARNESS_FAULT_POINTS kills it with the temp file complete, not yet renamed
"""


def test_a_probe_cache_write_killed_midway_leaves_nothing_behind_for_long(tmp_path):
    """A kill during the first probe's save left `.video-probe.json.*.part` in the cache forever;
    the next save (under the cache's lock, whose dead holder is stale at once) removes it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from harness.data.probe import ProbeCache

    root = Path(__file__).resolve().parents[1]
    video = tmp_path / "clip.mp4"
    video.write_bytes(_mp4_bytes())
    env = {**os.environ, "PYTHONPATH": str(root), "HARNESS_FAULT_POINTS": "atomic.before_rename:1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(video)], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob(".video-probe.json.*.part"))) == 1 and not (tmp_path / "video-probe.json").exists()
    cache = ProbeCache(tmp_path)
    assert cache.check(video) is None
    cache.save()
    assert list(tmp_path.glob(".video-probe.json.*.part")) == [] and not (tmp_path / ".video-probe.lock").exists()
    assert len(json.loads((tmp_path / "video-probe.json").read_text())["verdicts"]) == 1
