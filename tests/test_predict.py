"""`harness predict` as a user calls it: stdout holds only the predictions (`--format json` parses,
library notices go to stderr), stderr says which model scored the videos, `--top` below 1 is
refused before anything loads, and a long comma list of classes is a class list."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_top_below_one_is_refused_up_front(capsys):
    assert main(["predict", "--top", "0", "--classes", "a,b", "no-such-video.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "harness: error: --top 0: must be at least 1 (the number of classes shown per video)"


def test_json_output_parses_and_names_the_model(embedded_root, harness_cache):
    """A fresh process, as `harness predict --format json ... | python -m json.tool` runs it."""
    videos = sorted((embedded_root / "videos").glob("*.mp4"))[:2]
    classes = ",".join(f"a small animated shape number {i}" for i in range(12))  # > 255 characters
    assert len(classes) > 300
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "predict", "--backbone", "harness-tiny",
                           "--pretrained", "random", "--classes", classes, "--top", "3", "--cache",
                           str(harness_cache), "--format", "json", *map(str, videos)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)  # nothing but JSON on stdout
    assert [row["video"] for row in rows] == [str(v.resolve()) for v in videos]
    assert all(len(row["top"]) == 3 and row["top"][0][0].startswith("a small animated shape") for row in rows)
    assert "no --checkpoint: scoring with method zeroshot on harness-tiny / random init" in done.stderr
