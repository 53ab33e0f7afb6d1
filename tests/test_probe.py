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
