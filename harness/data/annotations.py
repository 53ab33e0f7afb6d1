"""Class-name CSVs and video lists in the upstream (ViFi-CLIP / MMAction2) formats.

Why a module of its own: every protocol reads these two formats, and a wrong line in a list of
20 000 videos must be reported as `file:line` with the text and what to change, before training
starts, instead of as a `ValueError` from inside MMAction2 an hour later.

Formats, as found in the upstream files:

* class CSV: header `id,name`, then one `id,name` row per class with ids 0..n-1 in order. Names
  may contain commas, in which case they are quoted (`5,"Removing something, revealing ..."`,
  SSv2). Some upstream files use CRLF line ends.
* video list (`modality='video'`): `relative/path.ext label`, one per line. The label is split off
  at the LAST whitespace, so paths with spaces work; a path that starts with a space (a folder
  named ` clips`) is written as `./ clips/...`, since readers strip each line.
* rawframe list (`modality='rawframes'`): `relative/frame_dir total_frames label`.

Blank lines are ignored in both list formats. Writers are atomic (temp file in the same folder +
`os.replace`) so a killed process never leaves a half-written list that parses.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.errors import HarnessError

MODALITIES = ("video", "rawframes")


@dataclass(frozen=True)
class AnnotationEntry:
    """One line of a video list: the path relative to the video root, its label, and the 1-based
    line it came from (0 for entries made in code) so later errors can point back to the list."""

    path: str
    label: int
    line: int = 0
    total_frames: int | None = None


def _read_text(path: str | os.PathLike, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        hint = " (it is a directory)" if p.is_dir() else ""
        raise HarnessError(f"{what} not found: {p}{hint}. Check the path or the splits root it was "
                           f"resolved against.")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{p}: not UTF-8 text ({exc}); is this really a {what}?") from exc


def read_class_csv(path: str | os.PathLike) -> list[str]:
    """Read an `id,name` class CSV and return the names in id order.

    Ids must be exactly 0..n-1 in file order (the labels in the lists index this order) and names
    must be unique (they become text prompts; two equal prompts make two classes inseparable).
    """
    text = _read_text(path, "class CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    names: list[str] = []
    seen: dict[str, int] = {}
    header_seen = False
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if not header_seen:
            header = [c.strip().lower() for c in row]
            if header != ["id", "name"]:
                raise HarnessError(f"{path}:{line}: expected the header 'id,name', found {','.join(row)!r}. "
                                   f"Add the header line (class CSVs use the upstream ViFi-CLIP format).")
            header_seen = True
            continue
        if len(row) != 2:
            raise HarnessError(f"{path}:{line}: expected 2 fields 'id,name', found {len(row)} in "
                               f"{','.join(row)!r}. Quote names that contain commas: "
                               f'{row[0]},"{",".join(row[1:])}"')
        raw_id, name = row[0].strip(), row[1].strip()
        try:
            class_id = int(raw_id)
        except ValueError:
            raise HarnessError(f"{path}:{line}: class id {raw_id!r} is not an integer.") from None
        if class_id != len(names):
            raise HarnessError(f"{path}:{line}: class id {class_id} out of order; expected {len(names)} "
                               f"(ids must run 0..n-1 in file order because list labels index them).")
        if not name:
            raise HarnessError(f"{path}:{line}: class {class_id} has an empty name.")
        if name in seen:
            raise HarnessError(f"{path}:{line}: class name {name!r} repeats line {seen[name]}; "
                               f"class names must be unique (they are the text prompts).")
        seen[name] = line
        names.append(name)
    if not header_seen:
        raise HarnessError(f"{path}: empty class CSV; expected a header 'id,name' and one row per class.")
    if not names:
        raise HarnessError(f"{path}: the class CSV has a header but no classes.")
    return names


def _parse_int(text: str, what: str, where: str, line_text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HarnessError(f"{where}: {what} {text!r} is not an integer in line {line_text!r}. "
                           f"Each line must be 'relative/path.ext label' (label: integer class id).") from None


def read_annotation_list(
    path: str | os.PathLike,
    num_classes: int,
    modality: str = "video",
    classes_file: str | os.PathLike | None = None,
) -> list[AnnotationEntry]:
    """Parse and validate a video (or rawframe) list.

    `num_classes` is the size of the class CSV the labels index; `classes_file` only names that
    CSV in the error message, because "label 30 out of range" is only actionable when the user
    knows which CSV the list was paired with (base/novel lists index the `_base`/`_novel` CSVs).
    """
    if modality not in MODALITIES:
        raise HarnessError(f"unknown modality {modality!r} for {path}; use one of {', '.join(MODALITIES)}.")
    text = _read_text(path, "video list")
    fields = 2 if modality == "video" else 3
    fmt = "relative/path.ext label" if modality == "video" else "relative/frame_dir total_frames label"
    csv_hint = f" ({classes_file})" if classes_file else ""
    entries: list[AnnotationEntry] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        where = f"{path}:{lineno}"
        parts = stripped.rsplit(None, fields - 1)
        if len(parts) != fields:
            raise HarnessError(f"{where}: malformed line {stripped!r}; expected '{fmt}' "
                               f"(fields separated by whitespace).")
        label = _parse_int(parts[-1], "label", where, stripped)
        total = _parse_int(parts[1], "total_frames", where, stripped) if modality == "rawframes" else None
        if total is not None and total <= 0:
            raise HarnessError(f"{where}: total_frames must be positive, got {total} in {stripped!r}.")
        if not 0 <= label < num_classes:
            raise HarnessError(f"{where}: label {label} outside [0, {num_classes}) in {stripped!r}; labels "
                               f"index the class CSV{csv_hint} with {num_classes} classes. Check that the "
                               f"list is paired with the right CSV (base/novel lists index the _base/_novel "
                               f"CSVs).")
        entries.append(AnnotationEntry(path=parts[0], label=label, line=lineno, total_frames=total))
    return entries


def format_annotation_line(entry: AnnotationEntry | Sequence) -> str:
    """One list line for an entry or a `(path, label)` / `(path, total_frames, label)` tuple."""
    if isinstance(entry, AnnotationEntry):
        parts = [entry.path] + ([str(entry.total_frames)] if entry.total_frames is not None else [])
        parts.append(str(entry.label))
    else:
        parts = [str(x) for x in entry]
    if "\n" in parts[0] or not parts[0].strip():
        raise HarnessError(f"cannot write list entry with path {parts[0]!r}: paths must be non-empty, one line.")
    if parts[0][:1].isspace():  # a reader strips the line: keep the space as part of the path
        parts[0] = "./" + parts[0]
    return " ".join(parts)


def write_annotation_list(path: str | os.PathLike,
                          entries: Iterable[AnnotationEntry | Sequence]) -> None:
    """Write a video list in the upstream format (atomically)."""
    atomic_write_text(path, "".join(format_annotation_line(e) + "\n" for e in entries))


def write_class_csv(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write an `id,name` class CSV (atomically); names with commas or quotes are quoted."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "name"])
    for i, name in enumerate(names):
        if not name or "\n" in name:
            raise HarnessError(f"cannot write class {i} with name {name!r}: names must be non-empty, one line.")
        writer.writerow([i, name])
    atomic_write_text(path, buf.getvalue())
