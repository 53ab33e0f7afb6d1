"""Data: upstream split files, class names, video lists, the embedded synthetic dataset and the
MMAction2 pipelines.

Kept import-light on purpose (no mmengine/mmaction/decord here): the CLI imports this package to
list datasets and validate options in well under a second; only building a dataset
(`harness.data.pipeline.build_video_dataset`) pays for MMAction2.

Modules: `annotations` (class CSVs and video lists, parse/validate/write), `datasets` (which
upstream file plays which role, where videos live), `embedded` (the generated default dataset),
`pipeline` (MMAction2 transforms and validated datasets), `descriptions`, `upstream`.
"""
from harness.data.annotations import (
    AnnotationEntry,
    read_annotation_list,
    read_class_csv,
    write_annotation_list,
    write_class_csv,
)
from harness.data.datasets import DATASETS, ROLES, DatasetSpec, get_dataset, video_root

__all__ = [
    "DATASETS",
    "ROLES",
    "AnnotationEntry",
    "DatasetSpec",
    "get_dataset",
    "read_annotation_list",
    "read_class_csv",
    "video_root",
    "write_annotation_list",
    "write_class_csv",
]
