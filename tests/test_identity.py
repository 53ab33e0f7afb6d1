"""Run identity (job ids, protocol hash), results-format version, splits/shots validation and
failure isolation (issue: a row means exactly one configuration; one bad job never ends a run)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.jobs.expand import RunRequest, expand_jobs
from harness.jobs.identity import EXECUTION_ONLY_KEYS, RESULTS_FORMAT
from harness.jobs.spec import JobSpec
from harness.store import RunStore


def _req(cache, methods=("aim",), protocol="base2novel", **kw) -> RunRequest:
    base = dict(methods=list(methods), protocol=protocol, dataset="embedded", backbone="harness-tiny",
                pretrained="synthetic", splits=None, seed=2048, method_options={}, schedule_overrides={},
                data_overrides={}, profile="embedded", cache_dir=str(cache))
    base.update(kw)
    return RunRequest(**base)


def _ids(jobs) -> dict[tuple, str]:
    return {(j.method, j.split, j.shots): j.job_id for j in jobs}


# ---- identity ------------------------------------------------------------------------------------

def test_job_id_independent_of_other_jobs_and_their_order(harness_cache):
    a = _ids(expand_jobs(_req(harness_cache, ["aim", "msta"], splits=[1, 2])))
    b = _ids(expand_jobs(_req(harness_cache, ["zeroshot", "aim"], splits=[2])))
    c = _ids(expand_jobs(_req(harness_cache, ["msta", "zeroshot", "aim"], splits=[3, 2, 1])))
    assert a[("aim", 2, None)] == b[("aim", 2, None)] == c[("aim", 2, None)]
    assert a[("msta", 1, None)] == c[("msta", 1, None)]
    assert len(set(c.values())) == 9


def test_file_record_holds_only_the_jobs_own_files(harness_cache):
    jobs = expand_jobs(_req(harness_cache, ["zeroshot", "vificlip"], splits=[1, 2]))
    by = {(j.method, j.split): j for j in jobs}
    # the same files for every method of one split (not a record grown by the jobs before it)
    assert by[("zeroshot", 1)].file_provenance == by[("vificlip", 1)].file_provenance
    files = sorted(key.rsplit("/", 1)[-1] for key in by[("zeroshot", 1)].file_provenance)
    assert files == sorted(["embedded_base_labels.csv", "embedded_novel_labels.csv", "fs_base_s1_train.txt",
                            "base_val.txt", "novel_val.txt"])
    assert len({j.protocol_hash for j in jobs}) == 1


def test_zero_shot_targets_are_fingerprinted(harness_cache):
    (job,) = expand_jobs(_req(harness_cache, ["zeroshot"], protocol="zero_shot"))
    targets = [k for k in job.file_provenance if k.startswith("embedded_zs:")]
    assert len(targets) == 4  # 3 eval lists + the target class file


def test_protocol_hash_shared_by_every_subset_of_methods_and_splits(harness_cache):
    hashes = set()
    for methods, splits in ((["zeroshot"], [1]), (["aim", "msta"], [3]), (["vificlip"], None)):
        hashes |= {j.protocol_hash for j in expand_jobs(_req(harness_cache, methods, splits=splits))}
    assert len(hashes) == 1
    other = expand_jobs(_req(harness_cache, ["zeroshot"], profile="tiny"))[0].protocol_hash
    assert other not in hashes  # the profile is part of it


@pytest.mark.parametrize("change", [
    dict(method_options={"aim": {"lr": 1e-4}}),
    dict(method_options={"aim": {"weight_decay": 0.5}}),
    dict(schedule_overrides={"frames": 8}),  # the embedded profile has 4
    dict(schedule_overrides={"amp": "bf16"}),
    dict(schedule_overrides={"epochs": 2}),
    dict(data_overrides={"color_jitter": True}),
    dict(seed=1),
    dict(pretrained=None),
    dict(profile="tiny"),
    dict(schedule_kind="paper"),
])
def test_any_hashed_field_changes_the_id(harness_cache, change):
    base = expand_jobs(_req(harness_cache, splits=[1]))[0].job_id
    assert expand_jobs(_req(harness_cache, splits=[1], **change))[0].job_id != base


@pytest.mark.parametrize("key, value", [("num_workers", 2), ("cpu_threads", 1), ("micro_batch", 2),
                                        ("grad_checkpointing", True)])
def test_execution_only_keys_do_not_change_the_id(harness_cache, key, value):
    assert key in EXECUTION_ONLY_KEYS
    base = expand_jobs(_req(harness_cache, splits=[1]))[0]
    job = expand_jobs(_req(harness_cache, splits=[1], schedule_overrides={key: value}))[0]
    assert job.job_id == base.job_id
    assert getattr(job.schedule, key) == value  # recorded all the same


def test_a_job_record_reads_back_as_the_same_typed_job(harness_cache):
    """`JobSpec.from_dict(job.to_dict())` (the launcher's worker reads its job so): the same id and
    record, typed fields again typed; a record without a key of a later version takes its default."""
    from harness.settings import DataOptions, Schedule
    from methods.msta import MSTAConfig

    job = expand_jobs(_req(harness_cache, ["msta"], splits=[1], method_options={"msta": {"rank": 64}}))[0]
    back = JobSpec.from_dict(job.to_dict())
    assert back.job_id == job.job_id and back.to_dict() == job.to_dict()
    assert isinstance(back.method_options, MSTAConfig) and back.method_options.rank == 64
    assert isinstance(back.schedule, Schedule) and isinstance(back.data, DataOptions)
    record = job.to_dict()
    del record["schedule"]["log_backend"], record["data"]["decode_threads"]  # an older record (execution-only keys)
    old = JobSpec.from_dict(record)
    assert (old.schedule.log_backend, old.data.decode_threads) == ("local", 1) and old.job_id == job.job_id


def test_local_weights_swapped_in_place_are_a_new_job(harness_cache, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"first weights")
    first = expand_jobs(_req(harness_cache, splits=[1], pretrained=str(weights)))[0]
    again = expand_jobs(_req(harness_cache, splits=[1], pretrained=str(weights)))[0]
    weights.write_bytes(b"other weights")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size; a later mtime
    swapped = expand_jobs(_req(harness_cache, splits=[1], pretrained=str(weights)))[0]
    assert first.job_id == again.job_id != swapped.job_id
    assert first.weights["kind"] == "file" and len(first.weights["sha256"]) == 64
    moved = tmp_path / "moved.pt"
    weights.rename(moved)  # a checkpoint is identified by its content, not where it lies
    assert expand_jobs(_req(harness_cache, splits=[1], pretrained=str(moved)))[0].job_id == swapped.job_id


def test_synthetic_weights_identity_needs_no_pretraining(harness_cache, monkeypatch):
    import harness.pretrain as pretrain

    def refuse(*a, **k):
        raise AssertionError("--dry-run / job expansion must not pretrain")

    monkeypatch.setattr(pretrain, "ensure_pretrained_tiny", refuse)
    monkeypatch.setattr(pretrain, "pretrain_clip", refuse)
    job = expand_jobs(_req(harness_cache, splits=[1]))[0]
    assert job.weights == {"kind": "synthetic", "recipe_hash": pretrain.recipe_hash(pretrain.PretrainRecipe())}


def test_finished_job_of_an_older_results_format_is_rerun(harness_cache, tmp_path):
    job = expand_jobs(_req(harness_cache, splits=[1]))[0]
    store = RunStore(tmp_path)
    store.job_dir(job).mkdir(parents=True)
    path = store.job_dir(job) / "metrics.json"
    metrics = {"evals": {}, "params": {}, "train": {}}
    path.write_text(json.dumps({"job_id": job.job_id, "job": job.to_dict(), "metrics": metrics}))
    assert not store.is_finished(job)  # format 1: rerun
    path.write_text(json.dumps({"results_format": RESULTS_FORMAT - 1, "job_id": job.job_id, "job": job.to_dict(),
                                "metrics": metrics}))
    assert not store.is_finished(job)  # the previous format (micro-batch-dependent training): rerun
    path.write_text(json.dumps({"results_format": RESULTS_FORMAT, "job_id": job.job_id, "job": job.to_dict(),
                                "metrics": metrics}))
    assert store.is_finished(job)
    path.write_text(json.dumps({"results_format": RESULTS_FORMAT, "job_id": job.job_id}))
    assert not store.is_finished(job)  # no job / metrics records: not a result of this job


# ---- splits and shots ----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, splits, shots", [
    ("base2novel", [1, 2, 3], [None]), ("zero_shot", [1], [None]),
    ("few_shot", [1], [2, 8]), ("fully_supervised", [1], [None]),
])
def test_default_embedded_runs_expand_as_before(harness_cache, protocol, splits, shots):
    jobs = expand_jobs(_req(harness_cache, ["zeroshot"], protocol=protocol))
    assert [(j.split, j.shots) for j in jobs] == [(s, k) for s in splits for k in shots]


@pytest.mark.parametrize("protocol, kw, message", [
    ("zero_shot", dict(splits=[2]), "--splits: [2] not defined by protocol 'zero_shot'"),
    ("few_shot", dict(splits=[1, 3]), "--splits: [3]"),
    ("base2novel", dict(splits=[4]), "--splits: [4]"),
    ("few_shot", dict(shots=[3]), "--shots: [3] not defined"),
    ("base2novel", dict(shots=[2]), "--shots"),
])
def test_splits_and_shots_outside_the_protocol_are_an_error(harness_cache, protocol, kw, message):
    with pytest.raises(HarnessError) as err:
        expand_jobs(_req(harness_cache, ["zeroshot"], protocol=protocol, **kw))
    assert message in str(err.value)


# ---- whole runs: skipping, failures --------------------------------------------------------------

def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _cli(cache, out, methods, *extra):
    """A fast run: random backbone (no pretraining); with `skip_training`, nothing trained."""
    return ["run", "--methods", methods, "--protocol", "base2novel", "--profile", "tiny", "--cache", str(cache),
            "--out", str(out), "--no-progress", "--pretrained", "random", *extra]


def test_same_job_from_another_invocation_is_skipped(harness_cache, tmp_path, capsys, skip_training):
    code, _, _ = _run(_cli(harness_cache, tmp_path, "zeroshot,aim", "--splits", "1"), capsys)
    assert code == 0
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("jobs/*/metrics.json")}
    code, _, err = _run(_cli(harness_cache, tmp_path, "aim,zeroshot"), capsys)  # other order, profile's splits
    assert code == 0 and err.count("finished earlier, skipped") == 2
    assert before == {p: p.stat().st_mtime_ns for p in before}
    records = [json.loads(p.read_text()) for p in tmp_path.glob("jobs/*/metrics.json")]
    assert len(records) == 2 and {r["results_format"] for r in records} == {RESULTS_FORMAT}
    assert len({r["job"]["protocol_hash"] for r in records}) == 1


def test_a_failing_job_lets_the_others_finish(harness_cache, tmp_path, capsys, monkeypatch, skip_training):
    import harness.engine.runner as runner_mod

    real = runner_mod.run_job

    def flaky(job, job_dir, progress=True, **engine_keywords):  # the engine also passes the model source
        if job.method == "aim":
            raise HarnessError("simulated bad video file")
        return real(job, job_dir, progress, **engine_keywords)

    monkeypatch.setattr(runner_mod, "run_job", flaky)
    args = _cli(harness_cache, tmp_path, "aim,zeroshot")
    code, out, err = _run(args, capsys)
    assert code == 1
    assert [p.parent.name.split("-")[0] for p in tmp_path.glob("jobs/*/metrics.json")] == ["zeroshot"]
    (error,) = tmp_path.glob("jobs/aim-*/error.json")
    record = json.loads(error.read_text())
    assert record["type"] == "HarnessError" and record["message"] == "simulated bad video file"
    assert "flaky" in record["where"] and "Traceback" in record["traceback"]
    assert "## Failed jobs" in out and "simulated bad video file" in (tmp_path / "summary.md").read_text()
    monkeypatch.setattr(runner_mod, "run_job", real)
    code, out, err = _run(args, capsys)  # the rerun retries the failed job only
    assert code == 0 and err.count("finished earlier, skipped") == 1
    assert not error.exists() and (error.parent / "metrics.json").is_file()
    assert "Failed jobs" not in out


def test_non_finite_loss_is_a_failed_job(harness_cache, tmp_path, capsys):
    args = ["run", "--methods", "aim", "--protocol", "base2novel", "--profile", "tiny", "--cache", str(harness_cache),
            "--out", str(tmp_path), "--no-progress", "--pretrained", "random", "--set", "aim.lr=1e6"]
    code, _, err = _run(args, capsys)
    assert code == 1
    assert not list(tmp_path.glob("jobs/*/metrics.json"))
    (error,) = tmp_path.glob("jobs/*/error.json")
    assert "non-finite training loss" in json.loads(error.read_text())["message"]
    assert "non-finite training loss" in err


def test_open_clip_tag_identity_uses_the_checksum_in_its_url(monkeypatch, tmp_path):
    import harness.weights_identity as weights

    monkeypatch.setattr(weights, "_cached_download", lambda cfg: None)  # as on a machine without the download
    ident = weights.weights_identity("ViT-B-16", "openai", tmp_path)
    # open_clip's URL for the OpenAI ViT-B/16 weights carries their sha256
    assert ident == {"kind": "open_clip", "from": "url",
                     "sha256": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"}
    assert weights.weights_identity("ViT-B-16", "laion2b_s34b_b88k", tmp_path) == {
        "kind": "open_clip", "name": "ViT-B-16", "tag": "laion2b_s34b_b88k"}  # no checksum published
    download = tmp_path / "open_clip_model.safetensors"
    download.write_bytes(b"weights")
    monkeypatch.setattr(weights, "_cached_download", lambda cfg: download)
    assert weights.weights_identity("ViT-B-16", "laion2b_s34b_b88k", tmp_path) == {
        "kind": "open_clip", "sha256": hashlib.sha256(b"weights").hexdigest()}
