"""Adding a method is adding a file: a module dropped into methods/ that calls `register_method`
is listed by `harness ls methods` with no other file touched (no central list of modules)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A complete (if trivial) method file, as a contributor would write it.
TOY_METHOD = '''
from dataclasses import dataclass

from methods.base import MethodConfig, VideoTextModel, option
from methods.registry import register_method


@dataclass
class ToyConfig(MethodConfig):
    scale: float = option(2.0, "a toy option shown by harness ls")


@register_method("toy_probe", ToyConfig, "a method dropped in by a test")
class Toy(VideoTextModel):
    pass
'''


def test_a_new_file_in_methods_is_listed_by_harness_ls(tmp_path):
    """A copy of the methods package plus one new file, first on the path: `harness ls methods`
    (the real CLI, in a fresh interpreter) shows the new method and its option."""
    package = tmp_path / "methods"
    shutil.copytree(ROOT / "methods", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "toy_probe.py").write_text(TOY_METHOD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "ls", "methods"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "toy_probe" in proc.stdout and "a method dropped in by a test" in proc.stdout
    assert "a toy option shown by harness ls" in proc.stdout
    assert "msta" in proc.stdout  # the others are still found
