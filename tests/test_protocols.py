"""Protocols select exactly the upstream files and class lists."""
from __future__ import annotations

import pytest

from harness.data.annotations import read_annotation_list, read_class_csv
from harness.errors import HarnessError
from harness.jobs.expand import RunRequest, expand_jobs


def _request(dataset, protocol="base2novel", **kw):
    base = dict(methods=["zeroshot"], protocol=protocol, dataset=dataset, backbone="ViT-B-16", pretrained=None,
                splits=None, seed=1, method_options={}, schedule_overrides={}, data_overrides={}, profile=None,
                data_root="/nonexistent/data")
    base.update(kw)
    return RunRequest(**base)


@pytest.mark.upstream
def test_hmdb_base2novel_selects_upstream_files(upstream_root, tmp_path):
    jobs = expand_jobs(_request("hmdb51", splits_root=str(upstream_root), cache_dir=str(tmp_path)))
    assert [j.split for j in jobs] == [1, 2, 3]
    base = read_class_csv(upstream_root / "vifi-clip/labels/hmdb_51_base_labels.csv")
    novel = read_class_csv(upstream_root / "vifi-clip/labels/hmdb_51_novel_labels.csv")
    assert len(base) == 26 and len(novel) == 25
    for job in jobs:
        assert job.train.ann_file.endswith(f"fs_base_s{job.split}_train.txt")
        train = read_annotation_list(job.train.ann_file, len(job.train.classnames))
        assert len(train) == 416  # 16 shots x 26 base classes
        assert job.train.classnames == base
        evals = {e.name: e for e in job.evals}
        assert evals["base"].classnames == base and evals["base"].ann_file.endswith("base_val.txt")
        assert evals["novel"].classnames == novel and evals["novel"].ann_file.endswith("novel_val.txt")
        # novel labels index the novel CSV; no novel class name ever reaches training
        novel_rows = read_annotation_list(evals["novel"].ann_file, len(novel))
        assert {r.label for r in novel_rows} == set(range(25))
        assert not set(job.train.classnames) & set(novel)
        assert evals["base"].views == [10, 3]  # HMDB test views (MSTA runs)
        assert job.protocol_hash and all("sha256" in v for v in job.file_provenance.values())


@pytest.mark.upstream
def test_protocol_hash_changes_with_files_and_profile(upstream_root, tmp_path):
    a = expand_jobs(_request("hmdb51", splits=[1], splits_root=str(upstream_root), cache_dir=str(tmp_path)))[0]
    b = expand_jobs(_request("hmdb51", splits=[2], splits_root=str(upstream_root), cache_dir=str(tmp_path)))[0]
    c = expand_jobs(_request("hmdb51", splits=[1], profile="short", splits_root=str(upstream_root),
                             cache_dir=str(tmp_path)))[0]
    # one hash per (protocol, dataset, profile), whatever splits an invocation runs
    assert a.protocol_hash == b.protocol_hash != c.protocol_hash
    assert a.job_id != b.job_id


@pytest.mark.upstream
def test_k600_zero_shot_targets(upstream_root, tmp_path):
    # zero_shot trains on K400 (its train list is not in the local copy), so check the targets only
    from harness.jobs.expand import RunRequest, _zero_shot_targets
    from protocols import load_protocol

    req = _request("k400", protocol="zero_shot", splits_root=str(upstream_root), cache_dir=str(tmp_path))
    targets = _zero_shot_targets(load_protocol("zero_shot"), req, [1, 1])
    k600 = [t for t in targets if t.dataset == "k600"]
    assert [t.name for t in k600] == ["k600/split1", "k600/split2", "k600/split3"]
    assert all(len(t.classnames) == 160 for t in k600)
    hmdb = [t for t in targets if t.dataset == "hmdb51"]
    assert len(hmdb) == 3 and all(len(t.classnames) == 51 for t in hmdb)
    assert isinstance(RunRequest, type)


def test_embedded_base2novel_lists(harness_cache):
    jobs = expand_jobs(_request("embedded", backbone="harness-tiny", profile="embedded", cache_dir=str(harness_cache)))
    job = jobs[0]
    assert len(job.train.classnames) == 6 and len(job.evals[1].classnames) == 6
    assert not set(job.train.classnames) & set(job.evals[1].classnames)
    assert job.schedule.epochs == 6  # the embedded profile's short schedule
    assert "embedded_recipe_hash" in next(iter(job.file_provenance.values()))


def test_unknown_protocol_and_dataset_errors():
    with pytest.raises(HarnessError, match="base2novel"):
        expand_jobs(_request("hmdb51", protocol="base2nvel"))
    with pytest.raises(HarnessError, match="hmdb51"):
        expand_jobs(_request("hmdb5"))
    with pytest.raises(HarnessError, match="not defined on dataset"):
        expand_jobs(_request("ucf101", protocol="zero_shot"))


def test_k_shot_sampling_is_deterministic_and_per_class():
    from harness.data.annotations import AnnotationEntry
    from harness.data.kshot import sample_k_shot

    entries = [AnnotationEntry(f"v{i}.mp4", i % 3, i + 1) for i in range(30)]  # 10 per class
    a = sample_k_shot(entries, 4, seed=7)
    assert a == sample_k_shot(entries, 4, seed=7)
    assert [sum(e.label == c for e in a) for c in range(3)] == [4, 4, 4]
    assert a != sample_k_shot(entries, 4, seed=8)
    assert len(sample_k_shot(entries, 50, seed=7)) == 30  # fewer than K: keep all
