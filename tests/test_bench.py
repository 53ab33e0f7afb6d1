"""The throughput bench runs on CPU with a tiny backbone, needs neither mmengine nor mmaction
(the GPU host has neither), and the GPU script runs end to end in its smoke mode."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.measure.bench import (
    BASELINE,
    datasheet_peak,
    format_bench,
    measure_matmul_peak,
)

ROOT = Path(__file__).resolve().parents[1]

#: Put first on PYTHONPATH: makes importing the mm stack fail, as on the GPU host that lacks it.
_BLOCK_MM = """
import sys
class _NoMM:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("mmengine", "mmaction", "mmcv"):
            raise ModuleNotFoundError(f"{name} is not installed on the GPU host", name=name)
        return None
sys.meta_path.insert(0, _NoMM)
"""


@pytest.fixture(scope="module")
def cpu_rows():
    from harness.measure.bench import run_bench

    return run_bench(["zeroshot", "vificlip"], backbone="harness-tiny", batch=2, frames=2, iters=2, warmup=1,
                     device="cpu", amp="none", num_classes=4, baseline=False)


def test_tiny_cpu_rows_have_positive_throughput(cpu_rows):
    rows = {(r["method"], r["mode"]): r for r in cpu_rows}
    assert set(rows) == {(m, mode) for m in ("zeroshot", "vificlip") for mode in ("train", "infer")}
    assert rows[("zeroshot", "train")]["status"] == "skipped: no trainable parameters"
    for key in [("zeroshot", "infer"), ("vificlip", "train"), ("vificlip", "infer")]:
        row = rows[key]
        assert row["status"] == "ok", row.get("traceback")
        assert row["clips_per_s"] > 0 and row["step_ms"] > 0
        assert row["step_gflops"] > 0 and 0 < row["mfu"]
        assert row["card"] and row["torch"] and row["open_clip"] and row["peak_tflops_measured"] > 0
    # A training step costs more than inference of the same model (backward, text encoder per step).
    assert rows[("vificlip", "train")]["step_gflops"] > rows[("vificlip", "infer")]["step_gflops"]
    assert rows[("vificlip", "train")]["trainable"] > 0 and rows[("vificlip", "train")]["options"]["lr"] > 0


def test_format_bench(cpu_rows):
    rows = cpu_rows
    table = format_bench(rows, "table")
    markdown = format_bench(rows, "markdown")
    assert "vificlip" in table and "clips/s" in table and "card:" in table.splitlines()[0]
    assert markdown.count("\n| ") == len(rows) + 1 and "|---|" in markdown
    assert json.loads(format_bench(rows, "json")) == json.loads(json.dumps(rows))
    with pytest.raises(ValueError):
        format_bench(rows, "html")


def test_helpers():
    assert measure_matmul_peak("cpu", size=128, iters=2) > 0
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert datasheet_peak("NVIDIA H200") == 989.4e12
    assert datasheet_peak("NVIDIA H100 NVL") is None and datasheet_peak("Intel Xeon") is None


def test_gpu_script_smoke_runs_end_to_end_without_the_mm_stack(tmp_path):
    """scripts/gpu_bench.sh in its CPU smoke mode (deps check, eager pass with the open_clip
    baseline, a torch.compile pass, report) with mmengine/mmaction/mmcv made unimportable."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(_BLOCK_MM)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, GPU_BENCH_SMOKE="1", PYTHONPATH=str(block),
               GPU_BENCH_METHODS="vificlip", GPU_BENCH_COMPILE_METHODS="zeroshot",
               GPU_SITE=str(tmp_path / "site"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh")], env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "gpu_bench.json").read_text())
    bad = [(r["method"], r["mode"], r["status"]) for r in rows if r["status"] not in ("ok", "skipped: no trainable parameters")]
    assert not bad, bad
    ok = {(r["method"], r["mode"], r["compile"]) for r in rows if r["status"] == "ok"}
    assert {(BASELINE, "train", False), (BASELINE, "infer", False), ("vificlip", "train", False),
            ("vificlip", "infer", False)} <= ok
    assert ("zeroshot", "infer", True) in ok  # the torch.compile pass
    report = (out / "gpu_bench.md").read_text()
    assert report.startswith("# GPU bench") and "torch" in report and "| vificlip | train |" in report
    assert (out / "env.txt").exists() and (out / "gpu_bench.log").exists()


def test_data_bench_per_worker_rate(tmp_path):
    """Decode + augment throughput of the training pipeline on a small generated H.264 clip."""
    pytest.importorskip("mmaction")
    pytest.importorskip("decord")
    av = pytest.importorskip("av")
    import numpy as np

    from harness.measure.data_bench import bench_data, format_data_bench, workers_needed

    videos = tmp_path / "videos"
    videos.mkdir()
    container = av.open(str(videos / "clip.mp4"), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    for i in range(40):
        frame = np.full((64, 96, 3), (i * 6) % 255, dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    ann = tmp_path / "train.txt"
    ann.write_text("".join(f"clip.mp4 {i % 2}\n" for i in range(4)))
    rows = bench_data(ann, videos, num_classes=2, num_frames=4, image_size=32, samples=4, warmup=1,
                      targets={"gpu": 100.0})
    assert rows[0]["workers"] == 0 and rows[0]["clips_per_s"] > 0
    assert rows[0]["workers_needed"]["gpu"] == workers_needed(100.0, rows[0]["clips_per_s_per_worker"]) >= 1
    assert "workers needed" in format_data_bench(rows)


def test_plain_baseline_trains_through_the_whole_tower():
    """The open_clip baseline's train step back-propagates to the pixels (about twice its
    forward), and its inference is counted in full although eval mode takes MHA's fast path."""
    from harness.backbone import create_clip
    from harness.measure.bench import PlainVisual, _plain_flops

    clip, _ = create_clip("harness-tiny")
    model = PlainVisual(clip, num_classes=4)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["input_shift", "head.weight", "head.bias"]
    flops = _plain_flops(model, (2, 2, 3, 64, 64), trainable=True)
    assert 1.8 * flops["infer"] < flops["train"] < 2.2 * flops["infer"]


def _bench_args(argv):
    import argparse

    from harness.commands.bench import add_bench_arguments

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser, parser.parse_args(argv)


def test_cpu_gets_small_defaults_and_explicit_options_win():
    from harness.commands.bench import resolve_defaults

    cpu = resolve_defaults(_bench_args(["--device", "cpu"])[1])
    assert cpu == {"backbone": "harness-tiny", "batch": 4, "frames": 8, "iters": 5, "warmup": 2, "num_classes": 16,
                   "amp": "none", "device": "cpu"}
    gpu = resolve_defaults(_bench_args(["--device", "cuda:1"])[1])
    assert (gpu["backbone"], gpu["batch"], gpu["num_classes"], gpu["amp"], gpu["iters"]) == ("ViT-B-16", 32, 400, "bf16", 20)
    mine = resolve_defaults(_bench_args(["--device", "cpu", "--backbone", "ViT-B-16", "--batch", "32"])[1])
    assert (mine["backbone"], mine["batch"], mine["iters"]) == ("ViT-B-16", 32, 5)


def test_one_set_of_bench_options_with_help_text():
    """`harness bench` offers every option of `python -m harness.measure.bench` (= `python -m
    harness.commands.bench`), and each has help."""
    from harness.cli import build_parser

    module_parser, _ = _bench_args([])
    module_options = {s for a in module_parser._actions for s in a.option_strings} - {"-h", "--help"}
    bench_parser = build_parser()._subparsers._group_actions[0].choices["bench"]
    assert module_options <= {s for a in bench_parser._actions for s in a.option_strings}
    assert all(a.help for a in bench_parser._actions), [a.dest for a in bench_parser._actions if not a.help]


def test_bench_set_uses_the_run_grammar_and_coercion():
    """`--set` of the bench is `harness run`'s: YAML values, the options' own type checks."""
    from harness.errors import HarnessError
    from harness.settings import parse_method_sets

    assert parse_method_sets(["st_adapter.variant=24x384", "aim.drop_path_rate=1e-1"], ["st_adapter", "aim"]) == {
        "st_adapter": {"variant": "24x384"}, "aim": {"drop_path_rate": 0.1}}
    with pytest.raises(HarnessError, match="expected int"):
        parse_method_sets(["msta.rank=big"], ["msta"])
    with pytest.raises(HarnessError, match="schedule"):
        parse_method_sets(["schedule.epochs=2"], ["msta"])


def test_module_entry_reports_a_bad_option_in_one_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "harness.measure.bench", "--methods", "aim", "--set", "aim.nope=1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown option of method 'aim' 'nope'" in proc.stderr
