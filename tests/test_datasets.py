"""Dataset specs: every role file exists upstream (or in the generated embedded layout), labels index
the right CSVs, and unknown names/roles give actionable errors."""
from pathlib import Path

import pytest

from harness.data.annotations import read_annotation_list, read_class_csv
from harness.data.datasets import DATASETS, ROLES, get_dataset, resolve_data_root, video_root
from harness.errors import HarnessError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs ../shared/upstream")
#: Too large for the reference copy; their MANIFEST rows have the URL but no checksum.
ABSENT = {"datasets_splits/k400_splits/train.txt", "datasets_splits/base2novel_splits/k400_splits/base_train.txt"}


def role_paths(spec):
    """Every concrete (role, relative path) of a spec, templates expanded (user-built `local:`
    lists live under the data root, not in the upstream folder)."""
    for role, template in spec.files.items():
        if template.startswith("local:"):
            continue
        if "{split}" in template:
            yield from ((role, spec.file(role, split=s)) for s in spec.split_ids)
        elif "{shots}" in template:
            yield from ((role, spec.file(role, shots=k)) for k in spec.shots)
        else:
            yield role, spec.file(role)


def check_lists(spec, root: Path):
    """Every list parses against the CSV its labels index and uses every class of it."""
    for role, rel in role_paths(spec):
        if role.endswith("classes") or rel in ABSENT:
            continue
        fmt = {"split": int(rel.split("split")[-1][0])} if "{split}" in spec.files.get(
            spec.classes_role_for(role), "") else {}
        csv = root / spec.file(spec.classes_role_for(role), **fmt)
        n = len(read_class_csv(csv))
        entries = read_annotation_list(root / rel, n, classes_file=csv)
        assert {e.label for e in entries} == set(range(n)), (spec.name, rel)


def test_names_and_roles():
    assert set(DATASETS) == {"k400", "k600", "ucf101", "hmdb51", "ssv2", "embedded", "embedded_zs"}
    for spec in DATASETS.values():
        assert set(spec.files) <= set(ROLES)
    assert get_dataset("hmdb51").description_key == "hmdb" and get_dataset("ssv2").ost_key == "sth"
    assert get_dataset("ucf101").description_key == "ucf_101" and get_dataset("ucf101").ost_key == "ucf"
    with pytest.raises(HarnessError, match="Did you mean 'hmdb51'"):
        get_dataset("hmdb")


def test_file_templates_and_errors():
    hmdb = get_dataset("hmdb51")
    assert hmdb.file("b2n_train", split=2) == "datasets_splits/base2novel_splits/hmdb_splits/fs_base_s2_train.txt"
    assert hmdb.file("fewshot_train", shots=8) == "datasets_splits/hmdb_splits/train1_few_shot_8.txt"
    assert get_dataset("ssv2").file("fewshot_val") == "datasets_splits/ssv2_splits/validation.txt"
    assert get_dataset("k600").file("zs_classes", split=3) == "labels/ZS_split3_K600.csv"
    assert get_dataset("k600").classes_role_for("zs_eval") == "zs_classes"
    assert hmdb.classes_role_for("zs_eval") == "classes"
    with pytest.raises(HarnessError, match="does not support role 'train'"):
        hmdb.file("train")
    with pytest.raises(HarnessError, match="needs split="):
        hmdb.file("b2n_train")
    with pytest.raises(HarnessError, match="split 4 does not exist"):
        hmdb.file("b2n_train", split=4)
    with pytest.raises(HarnessError, match="shots=3"):
        hmdb.file("fewshot_train", shots=3)
    with pytest.raises(HarnessError, match="unknown file role"):
        hmdb.file("trian")


def test_video_root(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_DATA_ROOT", raising=False)
    with pytest.raises(HarnessError, match="--data-root"):
        resolve_data_root(None)
    assert video_root(get_dataset("k400"), tmp_path) == tmp_path / "k400" / "videos"
    monkeypatch.setenv("HARNESS_DATA_ROOT", str(tmp_path))
    assert video_root(get_dataset("hmdb51"), None) == tmp_path / "hmdb51" / "videos"
    assert video_root(get_dataset("embedded"), tmp_path) == tmp_path / "videos"


@needs_upstream
@pytest.mark.parametrize("name", ["hmdb51", "ucf101", "k400", "k600", "ssv2"])
def test_upstream_role_files_exist_and_index_their_csvs(name):
    spec = get_dataset(name)
    root = UPSTREAM / "vifi-clip"
    missing = [rel for _, rel in role_paths(spec) if rel not in ABSENT and not (root / rel).is_file()]
    assert not missing
    check_lists(spec, root)


@needs_upstream
def test_hmdb_base_to_novel_sizes():
    spec, root = get_dataset("hmdb51"), UPSTREAM / "vifi-clip"
    base = read_class_csv(root / spec.file("base_classes"))
    novel = read_class_csv(root / spec.file("novel_classes"))
    assert (len(base), len(novel)) == (26, 25) and not set(base) & set(novel)
    train = read_annotation_list(root / spec.file("b2n_train", split=1), len(base))
    assert len(train) == 416 and len({e.label for e in train}) == 26


@pytest.mark.parametrize("name", ["embedded", "embedded_zs"])
def test_embedded_role_files_exist_and_index_their_csvs(embedded_root, name):
    spec = get_dataset(name)
    assert spec.generated and not spec.flip_ok
    assert all((embedded_root / rel).is_file() for _, rel in role_paths(spec))
    check_lists(spec, embedded_root)
