"""`harness eval`: a checkpoint evaluated under a protocol with no training writes a run's
results; its sha256 is part of the job's identity; mismatches are one-line errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from convert_helpers import CLASSES, consistent_release, make_base, run_convert

from harness.cli import build_parser, main
from harness.convert.checkpoint import save_converted
from harness.convert.evaluate import checkpoint_jobs
from harness.data.upstream import file_sha256
from harness.errors import HarnessError

base = pytest.fixture(scope="module")(make_base)


def _records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("jobs/*/metrics.json")}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, harness_cache):
    """A tiny base-to-novel st_adapter run on the embedded dataset, and its checkpoint."""
    out = tmp_path_factory.mktemp("run") / "results"
    code = main(["run", "--methods", "st_adapter", "--protocol", "base2novel", "--profile", "tiny", "--pretrained",
                 "random", "--cache", str(harness_cache), "--out", str(out), "--no-progress"])
    assert code == 0
    (ckpt,) = out.glob("jobs/*/work/epoch_*.pth")
    (record,) = _records(out).values()
    return out, ckpt, record


def _eval_argv(ckpt, out, *extra, protocol="base2novel", dataset="embedded"):
    return ["eval", "--checkpoint", str(ckpt), "--protocol", protocol, "--dataset", dataset, "--profile", "tiny",
            "--out", str(out), "--no-progress", *extra]


def _eval(ckpt, out, *extra, **where):
    return main(_eval_argv(ckpt, out, *extra, **where))


def _eval_args(ckpt, *extra, **where):
    return build_parser().parse_args(_eval_argv(ckpt, "unused", *extra, **where))


@pytest.mark.slow  # shares a ~25 s tiny training run (trained_run)
def test_eval_of_a_run_checkpoint_reproduces_its_metrics(trained_run, tmp_path, capsys):
    run_out, ckpt, trained = trained_run
    out = tmp_path / "eval"
    assert _eval(ckpt, out) == 0
    (job_id, record), = _records(out).items()
    assert job_id != trained["job_id"]
    for name, ev in trained["metrics"]["evals"].items():  # exactly the run's numbers and per-video scores
        got = record["metrics"]["evals"][name]
        assert (got["top1"], got["top5"], got["n"]) == (ev["top1"], ev["top5"], ev["n"])
        mine, theirs = (np.load(d / "jobs" / i / "predictions" / f"{name}.npz")
                        for d, i in ((out, job_id), (run_out, trained["job_id"])))
        assert np.array_equal(mine["scores"], theirs["scores"]) and np.array_equal(mine["labels"], theirs["labels"])
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]  # tensors and plain data only
    job = record["job"]
    assert job["checkpoint"] == {"sha256": file_sha256(ckpt), "kind": "run", "path": str(ckpt.resolve())}
    assert job["schedule"]["epochs"] == 0 and record["metrics"]["train"]["skipped"] == "evaluated checkpoint"
    assert job["method_options"] == trained["job"]["method_options"]
    # the same result files as a run, and the table says what the row is
    assert {p.name for p in (out / "jobs" / job_id).iterdir()} >= {"config.json", "metrics.json", "predictions"}
    assert "st_adapter (evaluated checkpoint)" in (out / "summary.md").read_text()
    assert "checkpoint.sha256" in (out / "summary.md").read_text()
    # the same checkpoint at another place is the same job (content, not path, is its identity)
    moved = tmp_path / "moved"
    shutil.copytree(ckpt.parent.parent, moved)
    capsys.readouterr()
    assert _eval(moved / "work" / ckpt.name, out) == 0
    assert "finished earlier, skipped" in capsys.readouterr().err and len(_records(out)) == 1


@pytest.mark.slow  # shares a ~25 s tiny training run (trained_run)
def test_evaluated_model_is_built_inside_its_job(trained_run, tmp_path, monkeypatch):
    """No model crosses from planning into a job or outlives its job: the evaluated model is loaded
    inside the job, after the job applied its settings (schedule.cpu_threads=1 while the process
    runs 2 threads: a model built in planning would carry the process's); after the job the
    process's thread count and RNG are as before; the scores equal the run's bit for bit."""
    import harness.convert.checkpoint as checkpoint_mod
    import harness.engine.runner as runner_mod

    run_out, ckpt, trained = trained_run
    loads, used = [], []
    real_load, real_build = checkpoint_mod.load_checkpoint, runner_mod.build_net

    def load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        loads.append((torch.get_num_threads(), loaded.net))  # keeps every net alive: identities stay unique
        return loaded

    monkeypatch.setattr(checkpoint_mod, "load_checkpoint", load)
    monkeypatch.setattr(runner_mod, "build_net", lambda job, source=None: used.append(real_build(job, source)) or used[-1])
    torch.set_num_threads(2)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    try:
        assert _eval(ckpt, tmp_path / "eval", "--set", "schedule.cpu_threads=1") == 0
        assert torch.get_num_threads() == 2 and torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.set_num_threads(1)
    (net, _), = used
    assert len(loads) == 2  # planning's load (checked, then dropped) and the job's own
    assert [threads for threads, loaded in loads if loaded is net] == [1]
    (job_id, record), = _records(tmp_path / "eval").items()
    for name in trained["metrics"]["evals"]:
        mine, theirs = (np.load(d / "jobs" / i / "predictions" / f"{name}.npz")["scores"]
                        for d, i in ((tmp_path / "eval", job_id), (run_out, trained["job_id"])))
        assert np.array_equal(mine, theirs)


@pytest.mark.slow  # shares a ~25 s tiny training run (trained_run)
def test_accounting_of_the_trained_run(trained_run):
    """Counts known from the run itself: every training video once per epoch, each evaluation
    video once per view; CPU: no GPU-hours, the process's max RSS."""
    _, _, record = trained_run
    metrics = record["metrics"]
    acc, train = metrics["accounting"], metrics["train"]
    assert acc["train"]["clips"] == train["videos"]["used"] * train["epochs"]
    assert acc["train"]["steps"] == train["iters"]
    assert acc["eval"]["clips"] == sum(ev["n"] * ev["views"][0] * ev["views"][1] for ev in metrics["evals"].values())
    assert 0.0 <= acc["train"]["data_wait_fraction"] <= 1.0 and 0.0 <= acc["eval"]["data_wait_fraction"] <= 1.0
    assert acc["wall_seconds"] >= acc["train"]["seconds"] + acc["eval"]["seconds"]
    assert acc["gpus"] == 0 and acc["gpu_hours"] == 0.0 and acc["peak_memory_kind"] == "process_max_rss"
    header = (trained_run[0] / "per_job.csv").read_text().splitlines()[0].split(",")
    assert {"wall_s", "train_clips_per_s", "train_data_wait", "eval_clips_per_s", "device", "gpu_hours",
            "peak_mem_mib"} <= set(header)


@pytest.mark.slow  # shares a ~25 s tiny training run (trained_run)
def test_wrong_method_backbone_or_options_are_one_line_errors(trained_run, tmp_path, capsys):
    _, ckpt, _ = trained_run
    for extra, message in ((["--method", "aim"], "is a checkpoint of method 'st_adapter'"),
                           (["--backbone", "ViT-B-16"], "is a checkpoint of backbone 'harness-tiny'"),
                           (["--set", "st_adapter.lr=0.1"], "method options are fixed"),
                           (["--set", "schedule.frames=8"], "uses schedule.frames=4")):
        capsys.readouterr()
        assert _eval(ckpt, tmp_path / "x", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("harness: error:") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_converted_release_evaluates_and_its_sha256_is_its_identity(base, tmp_path, embedded_root, harness_cache):
    """Two converted releases (different weights) are two jobs; each runs on a folder dataset."""
    folder = tmp_path / "videos"
    embedded = embedded_root / "videos"
    for name in ("archery", "bowling"):
        (folder / name).mkdir(parents=True)
        for i, video in enumerate(sorted(embedded.glob("train_red_circle_bounce_*.mp4"))[:3]):
            shutil.copy(video, folder / name / f"{i}.mp4")
    out = tmp_path / "eval"
    for seed in (0, 1):
        conversion = run_convert("vificlip", consistent_release("vificlip", base, seed=seed), base, tmp_path, frames=2)
        ckpt = save_converted(conversion, tmp_path / f"vifi{seed}.harness.pt")
        assert _eval(ckpt, out, "--pretrained", str(base[0]), "--cache", str(harness_cache),
                     protocol="fully_supervised", dataset=f"folder:{folder}") == 0
    records = list(_records(out).values())
    assert len(records) == 2 and {r["job"]["checkpoint"]["kind"] for r in records} == {"converted"}
    assert len({r["job"]["checkpoint"]["sha256"] for r in records}) == 2
    assert all(r["metrics"]["evals"]["val"]["n"] == 2 and r["job"]["schedule"]["frames"] == 2 for r in records)
    assert all(r["job"]["backbone"] == "harness-b16-2l" for r in records)
    assert CLASSES  # the releases were trained on CLASSES; evaluated here on the folder's two classes
    # a linear head (5 training classes) cannot score the folder's 2 classes: refused before any job
    linear = save_converted(run_convert("st_adapter", consistent_release("st_adapter", base), base, tmp_path, frames=2),
                            tmp_path / "st_adapter.harness.pt")
    with pytest.raises(HarnessError, match=r"folders/.*\(val\): st_adapter head=linear was trained on 5 classes"):
        checkpoint_jobs(_eval_args(linear, "--pretrained", str(base[0]), "--cache", str(harness_cache),
                                   protocol="fully_supervised", dataset=f"folder:{folder}"), "tiny")
    with pytest.raises(HarnessError, match="head=linear is a closed-set head"):  # and no open-set protocol
        checkpoint_jobs(_eval_args(linear, "--pretrained", str(base[0]), "--cache", str(harness_cache)), "tiny")
