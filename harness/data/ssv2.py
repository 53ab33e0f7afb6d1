"""Something-Something v2 video lists built from the official annotation JSON.

ViFi-CLIP publishes SSv2 few-shot, base-to-novel and validation lists, but no full training list
(needed for the fully-supervised protocol). It can be rebuilt deterministically from the official
annotations every SSv2 user downloads with the videos:

- `something-something-v2-{train,validation}.json`: a list of
  `{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
    "template": "Holding [something] next to [something]", "placeholders": [...]}`;
- `something-something-v2-labels.json`: `{"Holding something next to something": "19", ...}`, i.e. the
  templates with the brackets removed (MMAction2's `tools/data/parse_file_list.py` maps them the same way).

The class id is taken from ViFi-CLIP's `labels/ssv2_labels.csv` by name (brackets removed,
case and spacing ignored), so the list uses the same ids as every other SSv2 list of the protocol;
with the `_base`/`_novel` CSV and `skip_unlisted=True` it gives the base-to-novel id space.
Checked against the upstream lists: `validation.txt` and `base2novel_splits/ssv2_splits/base_train.txt`
keep the order of the annotation JSON (`order="json"` reproduces that), and their labels agree with
this mapping for the annotation rows quoted in the SSv2 documentation.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from harness.atomic import atomic_write_text
from harness.errors import HarnessError, unknown_name_error


def normalise_template(text: str) -> str:
    """Compare templates and class names modulo brackets, case, spacing and a final full stop."""
    text = text.replace("[", "").replace("]", "")
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().lower()


def read_label_csv(path: Path | str) -> dict[int, str]:
    """Read a ViFi-CLIP label CSV (`id,name` header) into {id: name}; problems name file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read label CSV {path}: {exc.strerror or exc}") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["id", "name"]:
        raise HarnessError(f"{path}:1: a label CSV must start with the header 'id,name', got {header!r}")
    labels: dict[int, str] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip().isdigit():
            raise HarnessError(f"{path}:{lineno}: expected '<integer id>,<class name>', got {row!r}")
        cid = int(row[0])
        if cid in labels:
            raise HarnessError(f"{path}:{lineno}: class id {cid} appears twice")
        labels[cid] = row[1].strip()
    return labels


def _name_index(labels_csv: Path, labels: dict[int, str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for cid, name in labels.items():
        key = normalise_template(name)
        if key in index:
            raise HarnessError(
                f"{labels_csv}: classes {index[key]} and {cid} have the same name {name!r} "
                "once brackets, case and spacing are ignored; SSv2 templates must be unique"
            )
        index[key] = cid
    return index


def read_ssv2_annotations(json_path: Path | str) -> list[tuple[str, str]]:
    """(video id, template) for each entry of an official SSv2 annotation JSON, in file order."""
    json_path = Path(json_path)
    try:
        items = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{json_path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg})") from exc
    except OSError as exc:
        raise HarnessError(f"cannot read SSv2 annotation file {json_path}: {exc.strerror or exc}") from exc
    if not isinstance(items, list):
        raise HarnessError(
            f'{json_path}: expected a JSON list of {{"id", "template", ...}} objects (the official '
            "something-something-v2-train.json / -validation.json), got " + type(items).__name__
        )
    out: list[tuple[str, str]] = []
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise HarnessError(f"{json_path}: entry #{k} is not an object with an 'id': {item!r:.120}")
        if "template" not in item:
            raise HarnessError(
                f"{json_path}: entry #{k} (id {item['id']}) has no 'template'. Is this the unlabelled "
                "test split? Use something-something-v2-train.json or -validation.json."
            )
        out.append((str(item["id"]).strip(), str(item["template"])))
    return out


def _sort_key(video_id: str) -> tuple[int, int | str]:
    return (0, int(video_id)) if video_id.isdigit() else (1, video_id)


def build_ssv2_rows(
    json_path: Path | str,
    labels_csv: Path | str,
    order: Literal["id", "json"] = "id",
    skip_unlisted: bool = False,
    suffix: str = ".webm",
) -> list[tuple[str, int]]:
    """(`<id><suffix>`, class id) rows for an SSv2 annotation JSON, ids from `labels_csv` by name.

    A template that matches no class is an error (it means the CSV and the annotations disagree),
    unless `skip_unlisted` is set, which is what a `_base`/`_novel` CSV needs.
    """
    if order not in ("id", "json"):
        raise unknown_name_error("SSv2 list order", str(order), ("id", "json"))
    json_path, labels_csv = Path(json_path), Path(labels_csv)
    index = _name_index(labels_csv, read_label_csv(labels_csv))
    rows: list[tuple[str, int]] = []
    seen: set[str] = set()
    for video_id, template in read_ssv2_annotations(json_path):
        if video_id in seen:
            raise HarnessError(
                f"{json_path}: video id {video_id} appears twice; the annotation file is damaged"
            )
        seen.add(video_id)
        cid = index.get(normalise_template(template))
        if cid is None:
            if skip_unlisted:
                continue
            close = difflib.get_close_matches(normalise_template(template), list(index), n=2, cutoff=0.8)
            hint = f" Closest classes: {', '.join(repr(c) for c in close)}." if close else ""
            raise HarnessError(
                f"{json_path}: template {template!r} of video {video_id} matches no class name in "
                f"{labels_csv}.{hint} Use ViFi-CLIP's labels/ssv2_labels.csv with the official annotations, "
                "or pass skip_unlisted=True for a _base/_novel class list."
            )
        rows.append((video_id, cid))
    if order == "id":
        rows.sort(key=lambda row: _sort_key(row[0]))
    return [(f"{video_id}{suffix}", cid) for video_id, cid in rows]


def write_video_list(rows: Sequence[tuple[str, int]], out_path: Path | str) -> None:
    """Write `<path> <label>` lines (MMAction2 VideoDataset format) atomically."""
    atomic_write_text(out_path, "".join(f"{name} {label}\n" for name, label in rows))


def build_ssv2_list(
    json_path: Path | str,
    labels_csv: Path | str,
    out_path: Path | str,
    order: Literal["id", "json"] = "id",
    skip_unlisted: bool = False,
    suffix: str = ".webm",
) -> int:
    """Build an SSv2 video list (e.g. the full training list) and return its number of rows."""
    rows = build_ssv2_rows(json_path, labels_csv, order=order, skip_unlisted=skip_unlisted, suffix=suffix)
    if not rows:
        raise HarnessError(
            f"{json_path}: no video of the annotation file belongs to a class of {labels_csv}; "
            "nothing written"
        )
    write_video_list(rows, out_path)
    return len(rows)
