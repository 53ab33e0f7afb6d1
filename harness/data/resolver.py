"""Role -> local file for one dataset (`FileResolver`), with a fingerprint of every file handed out.

Why in `harness/data`: which file plays a role (`b2n_train`, `base_classes`, ...) and how it is
verified is a property of the dataset definitions (harness/data/datasets.py), the pinned upstream
store (harness/data/upstream.py), the embedded dataset's recipe and a user's folder; the job layer
(harness/jobs/) only asks for roles and records the fingerprints in each job's identity, and the
data commands (`harness data check` / `prepare`, the decode bench) use the same resolver.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from harness.data import embedded  # as a module: tests substitute embedded.ensure_embedded_dataset
from harness.data.annotations import read_class_csv
from harness.data.datasets import get_dataset, resolve_data_root, video_root
from harness.data.folder import prepare_folder
from harness.data.upstream import UpstreamStore, file_sha256
from harness.errors import HarnessError


class FileResolver:
    """Role -> local file for one dataset, and a fingerprint of every file handed out.

    Real datasets: split files come from the pinned upstream store (downloaded and verified, or
    copied from `--splits-root`); videos from the data root. The embedded dataset is its own
    splits and data root; its fingerprint is its generation recipe hash, not encoded bytes."""

    def __init__(self, dataset: str, data_root: str | None, splits_root: str | None, cache_dir: str | None = None,
                 embedded_recipe: str | None = None):
        """`embedded_recipe`: the named generation recipe of the embedded dataset (a profile's
        `dataset_recipe`; None: `small`); ignored for other datasets."""
        self.spec = get_dataset(dataset)
        self.provenance: dict[str, Any] = {}
        if self.spec.folder is not None:  # the user's videos: lists generated from the folder
            self.root, self.fingerprint = prepare_folder(self.spec, cache_dir)
            self.store, self.video_dir = None, Path(self.spec.folder)
        elif self.spec.generated:
            self.embedded_recipe = embedded_recipe or "small"
            self.root = embedded.ensure_embedded_dataset(Path(cache_dir) / "embedded" if cache_dir else None,
                                                         embedded.named_recipe(self.embedded_recipe))
            recipe = json.loads((self.root / "recipe.json").read_text())
            self.fingerprint = {"embedded_recipe_hash": recipe["hash"],
                                "generator_version": embedded.GENERATOR_VERSION}
            self.store = None
            self.video_dir = video_root(self.spec, self.root)
        else:
            self.root = None
            self.data_root = data_root
            self.store = UpstreamStore(cache_dir=Path(cache_dir) / "upstream" if cache_dir else None,
                                       splits_root=Path(splits_root) if splits_root else None)
            self.fingerprint = {}
            self.video_dir = video_root(self.spec, data_root)

    def path(self, role: str, **fmt: Any) -> Path:
        rel = self.spec.file(role, **fmt)
        if self.spec.folder is not None:
            return self._generated_file(rel)
        if self.spec.generated:
            path = self.root / rel
            if not path.is_file():
                raise HarnessError(f"embedded dataset at {self.root} lacks {rel}; delete that folder to regenerate it")
            self.provenance[rel] = self.fingerprint
            return path
        if rel.startswith("local:"):
            return self._local(rel.removeprefix("local:"))
        upstream_rel = f"vifi-clip/{rel}"
        path = self.store.path(upstream_rel)
        self.provenance[rel] = self.store.provenance(upstream_rel)
        return path

    def _generated_file(self, rel: str) -> Path:
        """A list generated from a video folder: fingerprinted by its sha256 and the split rule."""
        path = self.root / rel
        self.provenance[rel] = {"sha256": file_sha256(path), **self.fingerprint}
        return path

    def has(self, role: str) -> bool:
        return self.spec.has(role)

    def fork(self) -> FileResolver:
        """The same locations with an empty file record: each job records only the files it reads
        (sharing one growing record made a job's id depend on the jobs expanded before it)."""
        twin = copy.copy(self)
        twin.provenance = {}
        return twin

    def _local(self, rel: str) -> Path:
        """A list the user builds from their own copy (SSv2's training list): under the data root,
        fingerprinted by its sha256."""
        path = resolve_data_root(self.data_root) / rel
        if not path.is_file():
            raise HarnessError(f"{path} does not exist: build it from the official annotations with "
                               f"`harness data build-ssv2 --annotations DIR --data-root {path.parents[1]}`")
        self.provenance[f"local:{rel}"] = {"sha256": file_sha256(path), "local": True}
        return path

    def classnames(self, role: str, **fmt: Any) -> list[str]:
        """The class names of the class file playing `role` (recorded like any file handed out)."""
        return read_class_csv(self.path(role, **fmt))

    def list_and_classes(self, ann_role: str, classes_role: str, **fmt: Any) -> tuple[Path, Path]:
        """An annotation list and its class file (both recorded); the class file gets only the
        `split` of `fmt`, and only when its name has one."""
        ann = self.path(ann_role, **fmt)
        class_fmt = ({k: v for k, v in fmt.items() if k == "split"}
                     if "{split}" in self.spec.files.get(classes_role, "") else {})
        return ann, self.path(classes_role, **class_fmt)
