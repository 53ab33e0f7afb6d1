"""Class descriptions for MSTA's consistency loss: both upstream formats, both folder layouts, and
clear errors for the known defects of the upstream files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data.descriptions import (
    DescriptionSet,
    description_files,
    description_relpaths,
    load_descriptions,
    load_upstream_descriptions,
)
from harness.data.upstream import UpstreamStore, load_manifest
from harness.errors import HarnessError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs ../shared/upstream")


def _write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_relpaths_follow_both_upstream_layouts_and_are_pinned():
    assert description_relpaths("etl4video", "ucf", 2, subset="base") == {
        "s": "etl4video/description/2_s_description_ucf_101_base.json",
        "t": "etl4video/description/2_t_description_ucf_101_base.json",
    }
    assert (
        description_relpaths("ost", "ssv2", 4)["t"]
        == "ost/descriptors/sth/temporal_descriptors/4_descriptors.json"
    )
    assert (
        description_relpaths("ost", "k600", 8, split=3)["s"]
        == "ost/descriptors/k600/split3/spatio_8_descriptors.json"
    )
    pinned = {e.relpath for e in load_manifest()}
    for args in [("etl4video", "hmdb", 2), ("etl4video", "k400", 8), ("ost", "ucf", 2), ("ost", "ssv2", 4)]:
        assert set(description_relpaths(*args).values()) <= pinned, args


def test_invalid_arguments_say_what_to_do():
    with pytest.raises(HarnessError, match="unknown description source 'ots'.*'ost'"):
        description_relpaths("ots", "hmdb", 2)
    with pytest.raises(HarnessError, match="full-list ids"):
        description_relpaths("ost", "hmdb", 2, subset="base")
    with pytest.raises(HarnessError, match="no per-split files"):
        description_relpaths("etl4video", "k600", 2, split=1)
    with pytest.raises(HarnessError, match="positive integer"):
        description_relpaths("etl4video", "hmdb", 0)


def test_own_files_in_description_folder_or_root(tmp_path):
    data_s = {"0": ["A video about a red ball.", "A video about a table."], "1": ["A video about x.", "y"]}
    data_t = {"0": ["A video about rolling.", "A video about stopping."], "1": ["a", "b"]}
    _write(tmp_path / "description", "2_s_description_embedded.json", data_s)
    _write(tmp_path / "description", "2_t_description_embedded.json", data_t)
    d = load_descriptions("etl4video", tmp_path, "embedded", 2, [1, 0])
    assert isinstance(d, DescriptionSet)
    assert d.spatial == [["A video about x.", "y"], data_s["0"]] and d.temporal[1] == data_t["0"]
    assert d.sources["spatial"].endswith("description/2_s_description_embedded.json") and d.notes == []
    assert load_descriptions("etl4video", tmp_path / "description", "embedded", 2, [0]).spatial == [
        data_s["0"]
    ]


def test_malformed_and_wrongly_shaped_json_name_the_file(tmp_path):
    _write(tmp_path, "2_s_description_x.json", '{"0": ["a", "b"],}')
    _write(tmp_path, "2_t_description_x.json", {"0": ["a", "b"]})
    with pytest.raises(HarnessError, match=r"2_s_description_x\.json:1:\d+: malformed JSON"):
        load_descriptions("etl4video", tmp_path, "x", 2, [0])
    _write(tmp_path, "2_s_description_x.json", {"zero": ["a", "b"]})
    with pytest.raises(HarnessError, match=r"2_s_description_x\.json: key 'zero' is not a class id"):
        load_descriptions("etl4video", tmp_path, "x", 2, [0])
    _write(tmp_path, "2_s_description_x.json", {"0": "a sentence"})
    with pytest.raises(HarnessError, match="must map to a list of strings"):
        load_descriptions("etl4video", tmp_path, "x", 2, [0])


def test_missing_class_is_an_error_even_with_use_available(tmp_path):
    _write(tmp_path, "2_s_description_x.json", {"0": ["a", "b"]})
    _write(tmp_path, "2_t_description_x.json", {"0": ["a", "b"]})
    for policy in ("error", "use_available"):
        with pytest.raises(HarnessError, match=r"2_s_description_x\.json: no descriptions for class id 5"):
            load_descriptions("etl4video", tmp_path, "x", 2, [0, 5], on_short=policy)


@needs_upstream
@pytest.mark.parametrize("source", ["etl4video", "ost"])
def test_hmdb_n2_all_classes(source):
    d = load_descriptions(source, UPSTREAM, "hmdb", 2, range(51))
    assert len(d.spatial) == len(d.temporal) == 51
    assert all(len(s) == 2 and all(isinstance(x, str) and x for x in s) for s in d.spatial + d.temporal)
    assert d.notes == []
    if source == "etl4video":
        assert d.spatial[0][0].startswith("A video about")


@needs_upstream
def test_hmdb_base_subset_has_26_classes():
    d = load_descriptions("etl4video", UPSTREAM, "hmdb", 2, range(26), subset="base")
    assert len(d.spatial) == 26 and d.sources["temporal"].endswith("2_t_description_hmdb_base.json")
    with pytest.raises(HarnessError, match="class id 26"):
        load_descriptions("etl4video", UPSTREAM, "hmdb", 2, range(27), subset="base")


@needs_upstream
def test_k400_n8_short_class_174():
    with pytest.raises(HarnessError) as err:
        load_descriptions("etl4video", UPSTREAM, "k400", 8, range(400))
    msg = str(err.value)
    assert "8_s_description_k400.json" in msg and "class id 174 has 1 description" in msg and "N=8" in msg
    d = load_descriptions("etl4video", UPSTREAM, "k400", 8, range(400), on_short="use_available")
    assert len(d.spatial[174]) == 1 and len(d.spatial[0]) == 8 and len(d.temporal[174]) == 8
    assert len(d.notes) == 1 and "class 174" in d.notes[0] and "8_s_description_k400.json" in d.notes[0]


@needs_upstream
def test_missing_k600_temporal_n8_lists_what_exists():
    with pytest.raises(HarnessError) as err:
        description_files("etl4video", UPSTREAM, "k600", 8)
    msg = str(err.value)
    assert "8_t_description_k600.json" in msg and "2t, 4s, 4t, 8s" in msg
    with pytest.raises(HarnessError, match=r"no split: N = 4; split=1: N = 2, 4, 8"):
        description_files("ost", UPSTREAM, "k600", 2)


@needs_upstream
def test_ost_ssv2_is_sth_n4_and_k600_splits():
    d = load_descriptions("ost", UPSTREAM, "ssv2", 4, range(174))
    assert len(d.spatial) == 174 and all(len(s) == 4 for s in d.temporal)
    assert "/sth/" in d.sources["spatial"]
    with pytest.raises(HarnessError, match="no split: N = 4"):
        load_descriptions("ost", UPSTREAM, "ssv2", 2, range(174))
    assert len(load_descriptions("ost", UPSTREAM, "k600", 2, range(160), split=1).spatial) == 160


@needs_upstream
def test_load_through_the_pinned_store(tmp_path):
    store = UpstreamStore(cache_dir=tmp_path / "cache", splits_root=UPSTREAM)
    d = load_upstream_descriptions(store, "etl4video", "ucf", 2, range(50), subset="novel")
    assert len(d.spatial) == 50 and d.sources["spatial"].startswith(str(tmp_path / "cache"))
    with pytest.raises(HarnessError, match="not a published etl4video file.*subset=base: N/kind 2s, 2t"):
        load_upstream_descriptions(store, "etl4video", "hmdb", 4, range(26), subset="base")
