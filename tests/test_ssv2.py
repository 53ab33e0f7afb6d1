"""SSv2 lists from the official annotation JSON, checked against ViFi-CLIP's published lists.

The annotation rows below are the ones quoted in the SSv2 documentation (first and last entries of
something-something-v2-train.json and -validation.json); ViFi-CLIP's `validation.txt` and
`base_train.txt` start and end with the same videos, so their labels pin down the mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data.ssv2 import build_ssv2_list, build_ssv2_rows, normalise_template, read_label_csv
from harness.errors import HarnessError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs ../shared/upstream")
LABELS = UPSTREAM / "vifi-clip" / "labels"
SPLITS = UPSTREAM / "vifi-clip" / "datasets_splits"

VALIDATION = [
    {
        "id": "74225",
        "label": "spinning cube that quickly stops spinning",
        "template": "Spinning [something] that quickly stops spinning",
        "placeholders": ["cube"],
    },
    {
        "id": "116154",
        "label": "showing clay box on top of wallet",
        "template": "Showing [something] on top of [something]",
        "placeholders": ["clay box", "wallet"],
    },
    {
        "id": "117478",
        "label": "moving glass up",
        "template": "Moving [something] up",
        "placeholders": ["glass"],
    },
    {
        "id": "36585",
        "label": "plastic falling like a feather or paper",
        "template": "[Something] falling like a feather or paper",
        "placeholders": ["plastic"],
    },
]
TRAIN = [
    {
        "id": "78687",
        "label": "holding potato next to vicks vaporub bottle",
        "template": "Holding [something] next to [something]",
        "placeholders": ["potato", "vicks vaporub bottle"],
    },
    {
        "id": "42326",
        "label": "spreading margarine onto bread",
        "template": "Spreading [something] onto [something]",
        "placeholders": ["margarine", "bread"],
    },
    {
        "id": "145274",
        "label": "moving ladle away from hot pack",
        "template": "Moving [something] away from [something]",
        "placeholders": ["ladle", "hot pack"],
    },
    {
        "id": "131791",
        "label": "pretending to put vessel onto poori maker",
        "template": "Pretending to put [something] onto [something]",
        "placeholders": ["vessel", "poori maker"],
    },
]
# A few real rows of ViFi-CLIP's labels/ssv2_labels.csv, so the format tests need no upstream folder.
SMALL_CSV = """id,name
19,"Holding something next to something"
40,"Moving something away from something"
45,"Moving something up"
127,"Showing something on top of something"
134,"Something falling like a feather or paper"
140,"Spinning something that quickly stops spinning"
"""


def _json(tmp_path: Path, name: str, items) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items))
    return path


def _upstream_labels(path: Path) -> dict[str, int]:
    return {name: int(label) for name, label in (line.split() for line in path.read_text().splitlines())}


def test_normalise_template():
    assert normalise_template("[Something] falling  like a feather or paper.") == normalise_template(
        "Something falling like a feather or paper"
    )
    assert (
        normalise_template("Putting [number of] [something] onto [something]")
        == "putting number of something onto something"
    )


def test_build_sorted_by_id(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(SMALL_CSV)
    out = tmp_path / "lists" / "val.txt"
    assert build_ssv2_list(_json(tmp_path, "val.json", VALIDATION), labels, out) == 4
    assert out.read_text() == "36585.webm 134\n74225.webm 140\n116154.webm 127\n117478.webm 45\n"
    rows = build_ssv2_rows(tmp_path / "val.json", labels, order="json")
    assert [r[0] for r in rows] == ["74225.webm", "116154.webm", "117478.webm", "36585.webm"]


def test_unmatched_template_names_it(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(SMALL_CSV)
    items = [*VALIDATION, {"id": "9", "template": "Moving [something] upp"}]
    with pytest.raises(HarnessError) as err:
        build_ssv2_list(_json(tmp_path, "val.json", items), labels, tmp_path / "out.txt")
    msg = str(err.value)
    assert "'Moving [something] upp'" in msg and "video 9" in msg and "'moving something up'" in msg
    assert not (tmp_path / "out.txt").exists()
    assert len(build_ssv2_rows(tmp_path / "val.json", labels, skip_unlisted=True)) == 4


def test_bad_annotation_files(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(SMALL_CSV)
    with pytest.raises(HarnessError, match="unlabelled test split"):
        build_ssv2_rows(_json(tmp_path, "test.json", [{"id": "1420"}]), labels)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(HarnessError, match=r"bad\.json:1:\d+: malformed JSON"):
        build_ssv2_rows(tmp_path / "bad.json", labels)
    with pytest.raises(HarnessError, match="appears twice"):
        build_ssv2_rows(_json(tmp_path, "dup.json", VALIDATION[:1] * 2), labels)
    (tmp_path / "bad.csv").write_text("id,name\nx,Holding something\n")
    with pytest.raises(HarnessError, match=r"bad\.csv:2"):
        read_label_csv(tmp_path / "bad.csv")


@needs_upstream
def test_agrees_with_upstream_validation_list(tmp_path):
    out = tmp_path / "validation.txt"
    build_ssv2_list(_json(tmp_path, "val.json", VALIDATION), LABELS / "ssv2_labels.csv", out, order="json")
    upstream_lines = (SPLITS / "ssv2_splits" / "validation.txt").read_text().splitlines()
    # The upstream list keeps the JSON order: these are its first two and last two rows.
    assert out.read_text().splitlines() == upstream_lines[:2] + upstream_lines[-2:]


@needs_upstream
def test_agrees_with_upstream_train_lists(tmp_path):
    train = _json(tmp_path, "train.json", TRAIN)
    full = dict(build_ssv2_rows(train, LABELS / "ssv2_labels.csv"))
    few_shot = _upstream_labels(SPLITS / "ssv2_splits" / "train1_few_shot_16.txt")
    assert full["145274.webm"] == few_shot["145274.webm"] == 40
    out = tmp_path / "base_train.txt"
    n = build_ssv2_list(train, LABELS / "ssv2_174_base_labels.csv", out, order="json", skip_unlisted=True)
    base_lines = (SPLITS / "base2novel_splits" / "ssv2_splits" / "base_train.txt").read_text().splitlines()
    assert n == 2 and out.read_text().splitlines() == [base_lines[0], base_lines[-1]]
    novel = dict(build_ssv2_rows(train, LABELS / "ssv2_174_novel_labels.csv", skip_unlisted=True))
    assert novel == {"42326.webm": 36, "131791.webm": 60}


@needs_upstream
def test_every_class_name_round_trips():
    labels = read_label_csv(LABELS / "ssv2_labels.csv")
    assert len(labels) == 174 and len({normalise_template(n) for n in labels.values()}) == 174
