"""Class CSVs and video lists: parsing, error messages (file:line), writers, real upstream files."""
from pathlib import Path

import pytest

from harness.data.annotations import (
    AnnotationEntry,
    read_annotation_list,
    read_class_csv,
    write_annotation_list,
    write_class_csv,
)
from harness.errors import HarnessError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs ../shared/upstream")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


# ---------------------------------------------------------------- class CSVs

def test_class_csv_quoted_commas_and_crlf(tmp_path):
    p = write(tmp_path, "c.csv", 'id,name\r\n0,brush hair\r\n1,"Removing something, revealing it"\r\n')
    assert read_class_csv(p) == ["brush hair", "Removing something, revealing it"]


@pytest.mark.parametrize("text, line, needle", [
    ("0,a\n1,b\n", 1, "header"),
    ("id,name\n0,a\n2,b\n", 3, "out of order"),
    ("id,name\n0,a\nx,b\n", 3, "not an integer"),
    ("id,name\n0,a\n1,b,c\n", 3, "2 fields"),
    ("id,name\n0,a\n1,\n", 3, "empty name"),
    ("id,name\n0,a\n1,a\n", 3, "repeats line 2"),
])
def test_class_csv_errors_name_file_and_line(tmp_path, text, line, needle):
    p = write(tmp_path, "bad_labels.csv", text)
    with pytest.raises(HarnessError) as err:
        read_class_csv(p)
    assert f"bad_labels.csv:{line}" in str(err.value)
    assert needle in str(err.value)


def test_class_csv_missing_and_empty(tmp_path):
    with pytest.raises(HarnessError, match="not found: .*nope.csv"):
        read_class_csv(tmp_path / "nope.csv")
    with pytest.raises(HarnessError, match="empty"):
        read_class_csv(write(tmp_path, "e.csv", ""))
    with pytest.raises(HarnessError, match="no classes"):
        read_class_csv(write(tmp_path, "h.csv", "id,name\n"))


def test_class_csv_roundtrip(tmp_path):
    names = ["a", "b, with comma", 'c "quoted"']
    write_class_csv(tmp_path / "sub" / "x.csv", names)
    assert read_class_csv(tmp_path / "sub" / "x.csv") == names
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name != "x.csv"]  # no temp files left


# ---------------------------------------------------------------- video lists

def test_list_parses_spaces_blank_lines_and_crlf(tmp_path):
    p = write(tmp_path, "l.txt", "a/b.mp4 0\r\n\r\nwith space/c d.avi 2\n  \nlast.webm\t1")
    entries = read_annotation_list(p, num_classes=3)
    assert entries == [AnnotationEntry("a/b.mp4", 0, 1), AnnotationEntry("with space/c d.avi", 2, 3),
                       AnnotationEntry("last.webm", 1, 5)]


@pytest.mark.parametrize("text, line, needle", [
    ("a.mp4 0\nb.mp4\n", 2, "malformed line 'b.mp4'"),
    ("a.mp4 0\nb.mp4 x\n", 2, "label 'x' is not an integer"),
    ("a.mp4 0\n\nb.mp4 5\n", 3, "label 5 outside [0, 3)"),
    ("a.mp4 -1\n", 1, "label -1 outside"),
])
def test_list_errors_name_file_and_line(tmp_path, text, line, needle):
    p = write(tmp_path, "bad_list.txt", text)
    with pytest.raises(HarnessError) as err:
        read_annotation_list(p, num_classes=3, classes_file="labels/x_base_labels.csv")
    msg = str(err.value)
    assert f"bad_list.txt:{line}" in msg and needle in msg
    if "outside" in needle:
        assert "x_base_labels.csv" in msg and "3 classes" in msg


def test_list_missing_file(tmp_path):
    with pytest.raises(HarnessError, match="video list not found: .*absent.txt"):
        read_annotation_list(tmp_path / "absent.txt", 3)


def test_rawframes_lists(tmp_path):
    p = write(tmp_path, "r.txt", "frames/v 1 32 2\nother 16 0\n")
    entries = read_annotation_list(p, 3, modality="rawframes")
    assert entries[0] == AnnotationEntry("frames/v 1", 2, 1, total_frames=32)
    assert entries[1].total_frames == 16
    with pytest.raises(HarnessError, match=r"r2.txt:1: malformed"):
        read_annotation_list(write(tmp_path, "r2.txt", "frames 1\n"), 3, modality="rawframes")
    with pytest.raises(HarnessError, match=r"r3.txt:1: total_frames 'x'"):
        read_annotation_list(write(tmp_path, "r3.txt", "frames x 1\n"), 3, modality="rawframes")
    with pytest.raises(HarnessError, match="unknown modality"):
        read_annotation_list(p, 3, modality="flow")


def test_list_roundtrip(tmp_path):
    entries = [AnnotationEntry("x y/a.mp4", 1, 1), AnnotationEntry("b.mp4", 0, 2)]
    write_annotation_list(tmp_path / "o.txt", entries)
    assert (tmp_path / "o.txt").read_text() == "x y/a.mp4 1\nb.mp4 0\n"
    assert read_annotation_list(tmp_path / "o.txt", 2) == entries
    write_annotation_list(tmp_path / "r.txt", [AnnotationEntry("d", 1, total_frames=8), ("e", 4, 0)])
    assert (tmp_path / "r.txt").read_text() == "d 8 1\ne 4 0\n"


# ---------------------------------------------------------------- real upstream files

@needs_upstream
def test_all_upstream_label_csvs_parse():
    files = sorted((UPSTREAM / "vifi-clip" / "labels").glob("*.csv"))
    assert len(files) >= 16
    sizes = {p.name: len(read_class_csv(p)) for p in files}
    assert sizes["hmdb_51_labels.csv"] == 51 and sizes["ssv2_labels.csv"] == 174
    assert sizes["ZS_split2_K600.csv"] == 160 and sizes["kinetics_600_labels.csv"] == 600
    assert "Removing something, revealing something behind" in read_class_csv(
        UPSTREAM / "vifi-clip" / "labels" / "ssv2_labels.csv")


@needs_upstream
def test_upstream_lists_parse():
    root = UPSTREAM / "vifi-clip"
    hmdb = read_annotation_list(root / "datasets_splits/base2novel_splits/hmdb_splits/fs_base_s1_train.txt", 26)
    assert len(hmdb) == 416 and len({e.label for e in hmdb}) == 26
    novel = read_annotation_list(root / "datasets_splits/base2novel_splits/hmdb_splits/novel_val.txt", 25)
    assert {e.label for e in novel} == set(range(25))
    k400 = read_annotation_list(root / "datasets_splits/k400_splits/val.txt", 400)  # CRLF file
    assert k400[0].path.startswith("val/") and k400[0].path.endswith(".mp4")
    with pytest.raises(HarnessError, match=r"novel_val.txt:\d+: label \d+ outside \[0, 20\)"):
        read_annotation_list(root / "datasets_splits/base2novel_splits/hmdb_splits/novel_val.txt", 20)
