"""Dataset definitions: which upstream file plays which role, and where the videos live.

Why: the protocols (base-to-novel, few-shot, zero-shot, fully supervised) are defined by the
upstream ViFi-CLIP split files. Naming each file by its ROLE once, here, lets protocol code ask
for "the base-to-novel training list of split 2" without knowing that SSv2's few-shot validation
list is called `validation.txt` or that K600's zero-shot classes live in `ZS_split2_K600.csv`.

Two roots are involved:

* the SPLITS ROOT: a folder laid out like `../shared/upstream/vifi-clip/` (it contains `labels/`
  and `datasets_splits/`); `DatasetSpec.files` templates are relative to it;
* the DATA ROOT (`--data-root`, env `HARNESS_DATA_ROOT`): where the videos are. Expected layout,
  chosen so the paths in the upstream lists resolve unchanged below `<data_root>/<name>/videos/`::

      <data_root>/hmdb51/videos/<clip>.avi                    # flat, as in the HMDB lists
      <data_root>/ucf101/videos/v_<Class>_gXX_cYY.avi         # flat, as in the UCF lists
      <data_root>/k400/videos/{train,val}/<ytid>_<start>_<end>.mp4   # lists say train/... val/...
      <data_root>/k600/videos/train/<ytid>_<start>_<end>.mp4  # K600 zero-shot lists say train/...
      <data_root>/ssv2/videos/<id>.webm                       # flat, as in the SSv2 lists

  The generated `embedded` / `embedded_zs` datasets are their own splits root AND data root (the
  folder `harness.data.embedded.ensure_embedded_dataset` returns); their videos are in `videos/`.

Roles (a role a dataset lacks is absent from `files`):
`classes`, `base_classes`, `novel_classes`, `b2n_train` ({split}), `b2n_base_val`,
`b2n_novel_val`, `fewshot_train` ({shots}), `fewshot_val`, `train`, `val`, `zs_classes`
({split}), `zs_eval` ({split}). Labels in `b2n_train`/`b2n_base_val` index `base_classes`, in
`b2n_novel_val` `novel_classes`, in `zs_eval` `zs_classes` where present (K600) else `classes`,
elsewhere `classes` (see `LABELS_INDEX`).
"""
from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from harness.data.folder import FILES, PREFIX, SPLIT_RULE, folder_path, is_folder_dataset
from harness.errors import HarnessError, unknown_name_error

ROLES: tuple[str, ...] = (
    "classes", "base_classes", "novel_classes",
    "b2n_train", "b2n_base_val", "b2n_novel_val",
    "fewshot_train", "fewshot_val",
    "train", "val",
    "zs_classes", "zs_eval",
)

#: For each list role, the class-CSV role its labels index (zs_eval: zs_classes if the dataset
#: has that role, else classes; see `DatasetSpec.classes_role_for`).
LABELS_INDEX: Mapping[str, str] = MappingProxyType({
    "b2n_train": "base_classes", "b2n_base_val": "base_classes", "b2n_novel_val": "novel_classes",
    "fewshot_train": "classes", "fewshot_val": "classes", "train": "classes", "val": "classes",
    "zs_eval": "zs_classes",
})

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its role -> file templates (relative to the splits root) and video layout.

    `flip_ok` is False where a horizontal flip changes the label (SSv2 "left"/"right" classes,
    the embedded moving-left/right and clockwise/counter-clockwise classes): training pipelines
    for these datasets should be built with `flip=False`.
    """

    name: str
    title: str
    files: Mapping[str, str]
    video_subdir: str
    video_ext: str
    modality: str = "video"
    description_key: str | None = None
    ost_key: str | None = None
    flip_ok: bool = True
    generated: bool = False
    split_ids: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (2, 4, 8, 16)
    notes: str = ""
    #: A user's folder of videos (`--dataset folder:/path`, harness/data/folder.py): its lists are
    #: generated from the folder, and the folder is the video root.
    folder: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.files) - set(ROLES)
        if unknown:
            raise ValueError(f"dataset {self.name}: unknown roles {sorted(unknown)}")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    def has(self, role: str) -> bool:
        """Whether this dataset provides `role` (protocols check before asking for a file)."""
        return role in self.files

    def file(self, role: str, **fmt: object) -> str:
        """The path of `role`, relative to the splits root, with `{split}`/`{shots}` filled in."""
        if role not in ROLES:
            raise unknown_name_error("file role", role, ROLES)
        if role not in self.files:
            have = ", ".join(r for r in ROLES if r in self.files)
            raise HarnessError(f"dataset {self.name!r} does not support role {role!r} (no upstream file for "
                               f"it). Roles it has: {have}. Pick a protocol/dataset pair that uses those.")
        template = self.files[role]
        needed = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        missing = needed - set(fmt)
        if missing:
            raise HarnessError(f"dataset {self.name!r} role {role!r} needs {', '.join(sorted(missing))}=... "
                               f"(template {template!r}).")
        if "split" in needed and int(fmt["split"]) not in self.split_ids:  # type: ignore[arg-type]
            raise HarnessError(f"dataset {self.name!r}: split {fmt['split']} does not exist; use one of "
                               f"{', '.join(map(str, self.split_ids))}.")
        if "shots" in needed and int(fmt["shots"]) not in self.shots:  # type: ignore[arg-type]
            raise HarnessError(f"dataset {self.name!r}: no few-shot list for shots={fmt['shots']}; use one of "
                               f"{', '.join(map(str, self.shots))}.")
        return template.format(**{k: v for k, v in fmt.items() if k in needed})

    def classes_role_for(self, role: str) -> str:
        """The class-CSV role whose ids the labels of list `role` index."""
        target = LABELS_INDEX.get(role)
        if target is None:
            raise HarnessError(f"role {role!r} is not a video list role.")
        if target == "zs_classes" and not self.has("zs_classes"):
            return "classes"
        return target


def _b2n(prefix: str, labels: str) -> dict[str, str]:
    """The base-to-novel roles, which all four B2N datasets name the same way."""
    return {
        "base_classes": f"labels/{labels}_base_labels.csv",
        "novel_classes": f"labels/{labels}_novel_labels.csv",
        "b2n_train": f"datasets_splits/base2novel_splits/{prefix}_splits/fs_base_s{{split}}_train.txt",
        "b2n_base_val": f"datasets_splits/base2novel_splits/{prefix}_splits/base_val.txt",
        "b2n_novel_val": f"datasets_splits/base2novel_splits/{prefix}_splits/novel_val.txt",
    }


def _specs() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec(
            name="hmdb51", title="HMDB51", video_subdir="hmdb51/videos", video_ext=".avi",
            description_key="hmdb", ost_key="hmdb",
            files={"classes": "labels/hmdb_51_labels.csv", **_b2n("hmdb", "hmdb_51"),
                   "fewshot_train": "datasets_splits/hmdb_splits/train1_few_shot_{shots}.txt",
                   "fewshot_val": "datasets_splits/hmdb_splits/val1.txt",
                   "zs_eval": "datasets_splits/hmdb_splits/val{split}.txt"}),
        DatasetSpec(
            name="ucf101", title="UCF101", video_subdir="ucf101/videos", video_ext=".avi",
            description_key="ucf_101", ost_key="ucf",
            files={"classes": "labels/ucf_101_labels.csv", **_b2n("ucf", "ucf_101"),
                   "fewshot_train": "datasets_splits/ucf_splits/train1_few_shot_{shots}.txt",
                   "fewshot_val": "datasets_splits/ucf_splits/val1.txt",
                   "zs_eval": "datasets_splits/ucf_splits/val{split}.txt"}),
        DatasetSpec(
            name="k400", title="Kinetics-400", video_subdir="k400/videos", video_ext=".mp4",
            description_key="k400", ost_key="k400",
            files={"classes": "labels/kinetics_400_labels.csv", **_b2n("k400", "kinetics_400"),
                   "train": "datasets_splits/k400_splits/train.txt",
                   "val": "datasets_splits/k400_splits/val.txt"},
            notes="train.txt is not in the reference copy (too large); it is fetched from MANIFEST.tsv."),
        DatasetSpec(
            name="k600", title="Kinetics-600 (220 new classes)", video_subdir="k600/videos",
            video_ext=".mp4", description_key="k600", ost_key="k600",
            files={"classes": "labels/kinetics_600_labels.csv",
                   "zs_classes": "labels/ZS_split{split}_K600.csv",
                   "zs_eval": "datasets_splits/k600_splits/ZS_split{split}_K600_eval.txt"}),
        DatasetSpec(
            name="ssv2", title="Something-Something v2", video_subdir="ssv2/videos", video_ext=".webm",
            description_key="ssv2", ost_key="sth", flip_ok=False,
            files={"classes": "labels/ssv2_labels.csv", **_b2n("ssv2", "ssv2_174"),
                   "fewshot_train": "datasets_splits/ssv2_splits/train1_few_shot_{shots}.txt",
                   "fewshot_val": "datasets_splits/ssv2_splits/validation.txt",
                   "val": "datasets_splits/ssv2_splits/validation.txt",
                   # no upstream full training list: `harness data build-ssv2` writes it from the
                   # official JSON annotations into the data root ("local:" = under --data-root)
                   "train": "local:ssv2/train.txt"},
            notes="no full training list upstream: fully supervised SSv2 needs a user-supplied train list."),
        DatasetSpec(
            name="embedded", title="Embedded synthetic shapes (12 classes)", video_subdir="videos",
            video_ext=".mp4", description_key="embedded", ost_key="embedded", flip_ok=False, generated=True,
            files={"classes": "labels/embedded_labels.csv", **_b2n("embedded", "embedded"),
                   "fewshot_train": "datasets_splits/embedded_splits/train1_few_shot_{shots}.txt",
                   "fewshot_val": "datasets_splits/embedded_splits/val1.txt",
                   "train": "datasets_splits/embedded_splits/train.txt",
                   "val": "datasets_splits/embedded_splits/val.txt"}),
        DatasetSpec(
            name="embedded_zs", title="Embedded synthetic shapes, zero-shot target (6 classes)",
            video_subdir="videos", video_ext=".mp4", description_key="embedded_zs", ost_key="embedded_zs",
            flip_ok=False, generated=True,
            files={"classes": "labels/embedded_zs_labels.csv",
                   "zs_eval": "datasets_splits/embedded_zs_splits/val{split}.txt"}),
    ]
    return {s.name: s for s in specs}


DATASETS: dict[str, DatasetSpec] = _specs()


def get_dataset(name: str) -> DatasetSpec:
    """The spec called `name` (or `folder:/path`), or a HarnessError listing the valid names."""
    if is_folder_dataset(name):
        path = folder_path(name)
        return DatasetSpec(name=f"{PREFIX}{path}", title=f"videos in {path}", files=dict(FILES), video_subdir="",
                           video_ext="", folder=str(path), split_ids=(1,), notes=SPLIT_RULE)
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name_error("dataset", name, DATASETS) from None


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """`data_root` if given, else `$HARNESS_DATA_ROOT`; a HarnessError if neither is set."""
    value = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    if not value:
        raise HarnessError(f"no data root: pass --data-root or set {DATA_ROOT_ENV} (the folder that holds "
                           f"<dataset>/videos/..., see harness/data/datasets.py).")
    return Path(value).expanduser()


def video_root(spec: DatasetSpec, data_root: str | os.PathLike | None) -> Path:
    """The folder the paths in `spec`'s lists are relative to: `<data_root>/<spec.video_subdir>`.

    For generated datasets pass the generated folder as `data_root` (it holds `videos/`).
    """
    return resolve_data_root(data_root) / spec.video_subdir
