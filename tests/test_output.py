"""Output discipline: every `--format json` command prints exactly one JSON document on stdout,
whatever the libraries below it log (mmengine's console logger writes to stdout by default: its
`"FileClient" will be deprecated` notice used to come first), and options that a bench does not
honour are refused instead of ignored.

The JSON commands run in ONE fresh interpreter (a subprocess): a library prints its one-time
notices only the first time in a process, so in the test process, where other tests already
triggered them, the check could not fail. Every command with a `--format json` choice must have
an invocation here (found from the CLI's parser), so a new one cannot be forgotten.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _json_commands() -> set[str]:
    """(sub)commands whose --format offers json, as 'command' or 'command subcommand'."""
    found = set()

    def walk(parser, prefix: str) -> None:
        for action in parser._actions:
            if action.dest == "format" and action.choices and "json" in action.choices:
                found.add(prefix)
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())

    walk(build_parser(), "")
    return found


#: One invocation per JSON command (and per bench kind, each printing its own JSON).
def _invocations(ctx: dict[str, str]) -> dict[str, list[str]]:
    tiny = ["--backbone", "harness-tiny"]
    return {
        "params": ["params", "--methods", "zeroshot,aim", *tiny, "--frames", "2", "--classes", "3", "--format", "json"],
        "bench": ["bench", "--smoke", "--methods", "zeroshot", "--iters", "1", "--warmup", "0", "--no-baseline",
                  "--modes", "infer", "--json", ctx["rows"], "--format", "json"],
        "bench --report-only": ["bench", "--report-only", "--json", ctx["rows"], "--format", "json"],
        "bench --data": ["bench", "--data", "--samples", "1", "--frames", "2", "--image-size", "32",
                         "--cache", ctx["cache"], "--json", ctx["data_json"], "--format", "json"],
        "bench --data --synthetic": ["bench", "--data", "--synthetic", "kinetics-like", "--decoders", "decord",
                                     "--samples", "1", "--runs", "1", "--frames", "2", "--image-size", "32",
                                     "--cache", ctx["cache"], "--json", ctx["synthetic_json"], "--format", "json"],
        "bench --order-pairs": ["bench", "--order-pairs", "--methods", "zeroshot", "--epochs", "1", "--out", ctx["out"],
                                "--cache", ctx["cache"], "--json", ctx["pairs_json"], "--format", "json"],
        "predict": ["predict", *tiny, "--pretrained", ctx["weights"], "--classes", "a circle,a star", "--top", "2",
                    "--cache", ctx["cache"], "--format", "json", ctx["video"]],
    }


#: The fresh interpreter: the tests' own speed settings (tests/conftest.py), then each command
#: with stdout captured; prints {name: [exit code, stdout, error]}.
_CHILD = r"""
import contextlib, io, json, sys
import torch
torch.set_num_threads(1)
from harness.data import embedded
embedded.NAMED_RECIPES["benchmark"] = embedded.NAMED_RECIPES["small"]  # as tests/conftest.py
import harness.engine.runner as runner
runner.train = lambda *a, **k: {"iters": 0, "skipped": "test"}  # the order-pair bench: evaluation only
from harness.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    try:
        json.loads(out.getvalue())
        results[name] = [code, None]
    except ValueError as err:
        results[name] = [code, f"{err}: {out.getvalue()[:300]!r}"]
print(json.dumps(results))
"""


@pytest.mark.slow  # one fresh interpreter runs seven commands (about 55 s of CPU)
def test_every_json_command_prints_only_json(harness_cache, embedded_root, tmp_path):
    import torch

    from harness.backbone import create_clip

    weights = tmp_path / "tiny.pt"  # predict without a checkpoint: a harness-tiny weights file
    torch.save(create_clip("harness-tiny", pretrained=None)[0].state_dict(), weights)
    ctx = {"cache": str(harness_cache), "out": str(tmp_path / "pairs"), "weights": str(weights),
           "video": str(next((embedded_root / "videos").glob("*.mp4"))), "rows": str(tmp_path / "rows.json"),
           "data_json": str(tmp_path / "data.json"), "synthetic_json": str(tmp_path / "synthetic.json"),
           "pairs_json": str(tmp_path / "pairs.json")}
    invocations = _invocations(ctx)
    assert {name.split(" --")[0] for name in invocations} == _json_commands()  # every JSON command is here
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(invocations)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {name: [0, None] for name in invocations}, proc.stderr[-3000:]
    for key in ("data_json", "synthetic_json", "pairs_json"):  # --json FILE honoured by every bench
        assert json.loads(Path(ctx[key]).read_text()), key
    assert "mmengine - WARNING" in proc.stderr  # the notices still reach the user, on stderr


@pytest.mark.parametrize("argv, line", [
    (["bench", "--data", "--md", "x.md"], "--md: does not apply to `harness bench --data`"),
    (["bench", "--data", "--synthetic", "ssv2-like", "--batch", "4"],
     "--batch: does not apply to `harness bench --data --synthetic`"),
    (["bench", "--order-pairs", "--frames", "16"], "--frames: does not apply to `harness bench --order-pairs`"),
    (["bench", "--epochs", "3"], "--epochs: does not apply to `harness bench`"),
    (["bench", "--synthetic", "ssv2-like"], "--synthetic: only with --data"),
    (["bench", "--data", "--order-pairs"], "--data and --order-pairs: choose one bench"),
    (["bench", "--data", "--samples", "0", "--runs", "3"], "--samples 0: must be >= 1"),
])
def test_options_a_bench_would_ignore_are_refused(argv, line, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err, err
