"""A folder of the user's own videos as a dataset: `--dataset folder:/path`.

Layout: one sub-folder per class, its videos directly inside; the class name is the folder
name with underscores as spaces (`playing_guitar/` -> "playing guitar"), classes in sorted
folder order. The folder becomes the same kind of files the upstream datasets have (a class CSV
and `train` / `val` lists), written to the cache and fingerprinted like any other split file,
so the fully supervised and few-shot protocols run on it unchanged (few-shot lists are sampled
from `train` with the run's seed, as for Kinetics).

The train/val split is deterministic and stable: within each class, videos are ordered by the
sha256 of their path relative to the folder and the first `ceil(VAL_FRACTION * n)` (at least one
when a class has two or more videos) are validation videos. Adding a video never moves another
one across the split unless it lands among the first of its class; the rule and the counts are
recorded with the lists in every result.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.annotations import write_annotation_list, write_class_csv
from harness.errors import HarnessError
from harness.paths import cache_root

PREFIX = "folder:"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
VAL_FRACTION = 0.2
SPLIT_RULE = (f"per class: order videos by sha256 of their relative path, first ceil({VAL_FRACTION} * n) "
              "(>= 1 if n >= 2) are val, the rest train")
FILES = {"classes": "labels/classes.csv", "train": "splits/train.txt", "val": "splits/val.txt"}


def is_folder_dataset(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_path(name: str) -> Path:
    path = Path(name[len(PREFIX):]).expanduser()
    if not path.is_dir():
        raise HarnessError(f"--dataset {name}: {path} is not a folder (expected one sub-folder of videos per class)")
    return path.resolve()


def _order_key(relpath: str) -> str:
    return hashlib.sha256(relpath.encode("utf-8")).hexdigest()


@dataclass
class FolderSplit:
    classnames: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]

    def summary(self) -> dict[str, Any]:
        return {"classes": len(self.classnames), "train_videos": len(self.train), "val_videos": len(self.val),
                "split_rule": SPLIT_RULE}


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of `root` (resolved itself), in sorted order; hidden ones skipped. A
    symlink is followed when it names a folder of its own elsewhere; one that does not resolve
    (a loop, a missing target) or that points at the dataset folder, a folder above it or a
    folder inside it (the same videos under two classes) is refused, naming it."""
    folders = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            try:
                target = entry.resolve(strict=True)
            except (OSError, RuntimeError) as err:  # ELOOP / a missing target
                why = "a symlink loop" if "loop" in str(err).lower() else "its target does not exist"
                raise HarnessError(f"{entry}: a symlink that does not resolve ({why}); remove it or point it at "
                                   "a folder of videos") from None
            if target == root or target in root.parents:
                raise HarnessError(f"{entry}: a symlink to {target}, which contains the dataset folder itself (a "
                                   "loop); remove it: class folders hold videos")
            if root in target.parents:
                raise HarnessError(f"{entry}: a symlink to {target}, inside the dataset folder: its videos would "
                                   "belong to two classes; remove it")
        if entry.is_dir():
            folders.append(entry)
    return folders


def scan_folder(root: Path) -> FolderSplit:
    """Classes and the deterministic train/val split of the videos under `root`."""
    class_dirs = class_folders(root)
    if len(class_dirs) < 2:
        raise HarnessError(f"{root}: found {len(class_dirs)} class sub-folder(s); a dataset folder needs one "
                           "sub-folder of videos per class, at least two")
    names, train, val = [], [], []
    seen: dict[str, str] = {}
    for label, folder in enumerate(class_dirs):
        name = folder.name.replace("_", " ").strip()
        if name in seen:
            raise HarnessError(f"{root}: folders {seen[name]!r} and {folder.name!r} both give class name {name!r}")
        seen[name] = folder.name
        videos = sorted(f"{folder.name}/{f.name}" for f in folder.iterdir()
                        if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise HarnessError(f"{folder}: no videos (extensions {', '.join(VIDEO_EXTENSIONS)}); remove the folder "
                               "or add videos")
        ordered = sorted(videos, key=_order_key)
        n_val = max(1, math.ceil(VAL_FRACTION * len(ordered))) if len(ordered) >= 2 else 0
        val += [(v, label) for v in sorted(ordered[:n_val])]
        train += [(v, label) for v in sorted(ordered[n_val:])]
        names.append(name)
    return FolderSplit(names, train, val)


def prepare_folder(spec: Any, cache_dir: str | None) -> tuple[Path, dict[str, Any]]:
    """Write the class CSV and lists of `spec`'s folder into the cache; return (lists root,
    fingerprint recorded with every file handed out: the folder, the rule, the counts)."""
    root = Path(spec.folder)
    split = scan_folder(root)
    out = cache_root(cache_dir) / "folders" / hashlib.sha256(str(root).encode()).hexdigest()[:12]
    write_class_csv(out / FILES["classes"], split.classnames)
    write_annotation_list(out / FILES["train"], split.train)
    write_annotation_list(out / FILES["val"], split.val)
    return out, {"folder": str(root), **split.summary()}
