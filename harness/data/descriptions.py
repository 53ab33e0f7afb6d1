"""LLM-written class descriptions: MSTA's spatio-temporal consistency loss, OST's descriptors.

MSTA's loss pulls each trainable class embedding towards the mean frozen-text embedding of N
"spatial" and N "temporal" sentences about the class; OST scores every class by matching its N
spatio and N temporal descriptors to the frames. The paper's sentences are published by
ETL4Video; OST publishes a similar set of short spatio/temporal descriptors. Both are JSON objects
`{"<class id>": ["sentence", ...]}` whose ids index the ViFi-CLIP label CSV of the dataset
(the `_base` / `_novel` CSV for the base-to-novel files). Their file names differ:

- ETL4Video: `etl4video/description/{N}_{s|t}_description_<ds>[_base|_novel].json`,
  ds in hmdb, ucf_101, k400, k600, ssv2 (`_base`/`_novel` only for N=2);
- OST: `ost/descriptors/<ds>/{spatio,temporal}_descriptors/{N}_descriptors.json`, ds in hmdb, ucf,
  k400, k600, sth, plus K600 per zero-shot split `k600/split{1,2,3}/{spatio,temporal}_{N}_descriptors.json`.

The upstream files are not perfect (`8_s_description_k400.json` has one sentence for class 174;
some N are missing), so loading checks every class and says exactly what is wrong and where,
instead of letting a short list silently change the loss.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.data.upstream import UpstreamStore
from harness.errors import HarnessError, unknown_name_error

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.data.upstream import UpstreamStore

SOURCES = ("etl4video", "ost")
KINDS = {"s": "spatial", "t": "temporal"}
SUBSETS = ("base", "novel")

# Canonical dataset keys of this project -> the name each upstream uses in its file names.
# Any other key is used as-is (e.g. `embedded` for a dataset with its own description files).
_DATASET_NAMES = {
    "etl4video": {
        "hmdb": "hmdb",
        "hmdb51": "hmdb",
        "ucf": "ucf_101",
        "ucf101": "ucf_101",
        "ucf_101": "ucf_101",
        "k400": "k400",
        "kinetics400": "k400",
        "k600": "k600",
        "kinetics600": "k600",
        "ssv2": "ssv2",
        "sth": "ssv2",
        "sthv2": "ssv2",
    },
    "ost": {
        "hmdb": "hmdb",
        "hmdb51": "hmdb",
        "ucf": "ucf",
        "ucf101": "ucf",
        "ucf_101": "ucf",
        "k400": "k400",
        "kinetics400": "k400",
        "k600": "k600",
        "kinetics600": "k600",
        "ssv2": "sth",
        "sth": "sth",
        "sthv2": "sth",
    },
}
_OST_KIND_DIR = {"s": "spatio", "t": "temporal"}


@dataclass(frozen=True)
class DescriptionSet:
    """N spatial and N temporal sentences per class, in the order of the requested class ids."""

    spatial: list[list[str]]
    temporal: list[list[str]]
    sources: dict[str, str] = field(default_factory=dict)  # 'spatial'/'temporal' -> file path
    notes: list[str] = field(default_factory=list)  # deviations accepted with on_short='use_available'


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise unknown_name_error("description source", source, SOURCES)


def upstream_dataset_name(source: str, dataset_key: str) -> str:
    """The dataset's name in `source`'s file names (OST calls ssv2 `sth`, ETL4Video calls ucf `ucf_101`)."""
    _check_source(source)
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", dataset_key):
        raise HarnessError(f"dataset key {dataset_key!r} may only contain letters, digits, '_' and '-'")
    return _DATASET_NAMES[source].get(dataset_key.lower(), dataset_key)


def _check_args(source: str, n: int, subset: str | None, split: int | None) -> None:
    _check_source(source)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise HarnessError(f"number of descriptions per class N must be a positive integer, got {n!r}")
    if subset is not None and subset not in SUBSETS:
        raise unknown_name_error("description subset", str(subset), SUBSETS)
    if source == "ost" and subset is not None:
        raise HarnessError(
            f"OST descriptors have no {subset!r} files: they are keyed by the full class list. "
            "Load them with subset=None and pass the full-list ids of your classes as class_ids."
        )
    if source == "etl4video" and split is not None:
        raise HarnessError(
            "ETL4Video descriptions have no per-split files: the K600 file is keyed by the 600-class "
            "kinetics_600_labels.csv. Load it with split=None and pass the full-list ids of the split's "
            "classes."
        )
    if split is not None and (isinstance(split, bool) or not isinstance(split, int) or split < 1):
        raise HarnessError(f"split must be a positive integer (1, 2 or 3), got {split!r}")


def description_relpaths(
    source: str, dataset_key: str, n: int, subset: str | None = None, split: int | None = None
) -> dict[str, str]:
    """Paths of the 's' and 't' files relative to an upstream root (also the keys of the manifest)."""
    _check_args(source, n, subset, split)
    ds = upstream_dataset_name(source, dataset_key)
    if source == "etl4video":
        suffix = f"_{subset}" if subset else ""
        return {k: f"etl4video/description/{n}_{k}_description_{ds}{suffix}.json" for k in KINDS}
    if split is not None:
        return {
            k: f"ost/descriptors/{ds}/split{split}/{_OST_KIND_DIR[k]}_{n}_descriptors.json" for k in KINDS
        }
    return {k: f"ost/descriptors/{ds}/{_OST_KIND_DIR[k]}_descriptors/{n}_descriptors.json" for k in KINDS}


def _candidate_dirs(source: str, root: Path) -> list[Path]:
    """The folders that may play the role of `etl4video/description/` or `ost/descriptors/`."""
    if source == "etl4video":
        return [root / "etl4video" / "description", root / "description", root]
    return [root / "ost" / "descriptors", root / "descriptors", root]


def _describe_available(source: str, names: Sequence[str], ds: str) -> str:
    """Summarise which N / subsets / splits exist among relative file names, for error messages."""
    if source == "etl4video":
        pattern = re.compile(rf"(\d+)_([st])_description_{re.escape(ds)}(?:_(base|novel))?\.json$")
    else:
        pattern = re.compile(
            rf"{re.escape(ds)}/(?:(?:spatio|temporal)_descriptors/(\d+)_descriptors"
            rf"|split(\d+)/(?:spatio|temporal)_(\d+)_descriptors)\.json$"
        )
    found: dict[str, set[str]] = {}
    for name in names:
        m = pattern.search(name.replace("\\", "/"))
        if not m:
            continue
        if source == "etl4video":
            label = f"subset={m.group(3)}" if m.group(3) else "full class list"
            found.setdefault(label, set()).add(f"{m.group(1)}{m.group(2)}")
        elif m.group(1):
            found.setdefault("no split", set()).add(m.group(1))
        else:
            found.setdefault(f"split={m.group(2)}", set()).add(m.group(3))
    if not found:
        return f"no {source} description files for dataset {ds!r} were found there"
    parts = []
    for label in sorted(found):
        values = sorted(found[label], key=lambda v: (int(re.match(r"\d+", v).group()), v))
        parts.append(
            f"{label}: N/kind {', '.join(values)}"
            if source == "etl4video"
            else f"{label}: N = {', '.join(values)}"
        )
    return "Available for this dataset: " + "; ".join(parts)


def _list_local(source: str, root: Path, ds: str) -> list[str]:
    names: list[str] = []
    for base in _candidate_dirs(source, root):
        if not base.is_dir():
            continue
        if source == "etl4video":
            names += [p.name for p in base.glob(f"*_description_{ds}*.json")]
        else:
            names += [
                p.relative_to(base).as_posix() for p in (base / ds).glob("*/*.json") if (base / ds).is_dir()
            ]
    return sorted(set(names))


def description_files(
    source: str,
    root: Path | str,
    dataset_key: str,
    n: int,
    subset: str | None = None,
    split: int | None = None,
) -> dict[str, Path]:
    """The local 's' and 't' files under `root`; a missing one raises, listing what does exist.

    `root` may be an upstream-like folder (`root/etl4video/description/`, `root/ost/descriptors/`), a
    dataset folder with its own `description/` (or `descriptors/`) subfolder, or the folder itself.
    """
    root = Path(root).expanduser()
    rel = description_relpaths(source, dataset_key, n, subset, split)
    ds = upstream_dataset_name(source, dataset_key)
    prefix = "etl4video/description/" if source == "etl4video" else "ost/descriptors/"
    tails = {k: r[len(prefix) :] for k, r in rel.items()}
    for base in _candidate_dirs(source, root):
        paths = {k: base / tail for k, tail in tails.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    tried = [str(base / tails["s"]) for base in _candidate_dirs(source, root)]
    missing_t = [
        str(base / tails["t"]) for base in _candidate_dirs(source, root) if (base / tails["s"]).is_file()
    ]
    what = f"{missing_t[0]} (its spatial file exists)" if missing_t else " or ".join(dict.fromkeys(tried))
    raise HarnessError(
        f"{source} description file not found: {what}. "
        f"{_describe_available(source, _list_local(source, root, ds), ds)}. "
        "Choose an N/subset that exists, point the description root to the right folder, "
        "or write your own with `harness.describe.write_descriptions`."
    )


def _read_description_json(path: Path) -> dict[int, list[str]]:
    """Parse and type-check one description file; every problem names the file (and the class)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HarnessError(
            f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); "
            'a description file must be an object {"<class id>": ["sentence", ...]}'
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read description file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise HarnessError(
            f'{path}: expected a JSON object {{"<class id>": ["sentence", ...]}}, got {type(raw).__name__}'
        )
    out: dict[int, list[str]] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"\d+", str(key).strip()):
            raise HarnessError(f"{path}: key {key!r} is not a class id (a non-negative integer as a string)")
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise HarnessError(f"{path}: class {key} must map to a list of strings, got {value!r:.80}")
        out[int(key)] = [s.strip() for s in value if s.strip()]
    return out


def _select(
    path: Path,
    data: dict[int, list[str]],
    class_ids: Sequence[int],
    n: int,
    on_short: str,
    notes: list[str],
) -> list[list[str]]:
    rows: list[list[str]] = []
    for cid in class_ids:
        sentences = data.get(int(cid))
        if not sentences:
            have = f"ids {min(data)}..{max(data)}, {len(data)} classes" if data else "no classes"
            raise HarnessError(
                f"{path}: no descriptions for class id {cid} (the file has {have}). Check that the class "
                "list matches the file (full vs _base/_novel CSV) or write descriptions for the missing "
                "class."
            )
        if len(sentences) < n:
            joined = sum(s.count(". ") for s in sentences) >= n - len(sentences)
            hint = " (its text looks like several sentences joined into one string)" if joined else ""
            if on_short != "use_available":
                raise HarnessError(
                    f"{path}: class id {cid} has {len(sentences)} description(s){hint}, N={n} needed. Add "
                    "descriptions for that class to this file, or choose an N whose files have enough "
                    "(`--set msta.n_descriptions` / `ost.n_descriptors`; Python callers: on_short='use_available' "
                    "uses the ones it has)."
                )
            notes.append(
                f"{path.name}: class {cid} has {len(sentences)} of {n} descriptions{hint}; used those"
            )
        rows.append(sentences[:n])
    return rows


def load_description_files(
    files: dict[str, Path],
    n: int,
    class_ids: Sequence[int],
    on_short: Literal["error", "use_available"] = "error",
) -> DescriptionSet:
    """Load an 's'/'t' pair of description files (any source) for `class_ids`, checking every class."""
    if on_short not in ("error", "use_available"):
        raise unknown_name_error("on_short policy", str(on_short), ("error", "use_available"))
    if not class_ids:
        raise HarnessError("no class ids given: pass the ids of the classes you train on (class-list order)")
    notes: list[str] = []
    lists = {}
    for kind, name in KINDS.items():
        path = Path(files[kind])
        lists[name] = _select(path, _read_description_json(path), class_ids, n, on_short, notes)
    return DescriptionSet(
        spatial=lists["spatial"],
        temporal=lists["temporal"],
        sources={KINDS[k]: str(Path(p)) for k, p in files.items()},
        notes=notes,
    )


def load_descriptions(
    source: Literal["etl4video", "ost"],
    root: Path | str,
    dataset_key: str,
    n: int,
    class_ids: Sequence[int],
    subset: str | None = None,
    split: int | None = None,
    on_short: Literal["error", "use_available"] = "error",
) -> DescriptionSet:
    """Descriptions of `class_ids` (ids of the matching label CSV) from a local folder `root`."""
    files = description_files(source, root, dataset_key, n, subset=subset, split=split)
    return load_description_files(files, n, class_ids, on_short=on_short)


def load_upstream_descriptions(
    store: UpstreamStore,
    source: Literal["etl4video", "ost"],
    dataset_key: str,
    n: int,
    class_ids: Sequence[int],
    subset: str | None = None,
    split: int | None = None,
    on_short: Literal["error", "use_available"] = "error",
) -> DescriptionSet:
    """Like `load_descriptions`, but the files come verified from the pinned upstream store."""
    rel = description_relpaths(source, dataset_key, n, subset, split)
    missing = [r for r in rel.values() if r not in store.entries]
    if missing:
        ds = upstream_dataset_name(source, dataset_key)
        prefix = "etl4video/description/" if source == "etl4video" else "ost/descriptors/"
        known = [r[len(prefix) :] for r in store.entries if r.startswith(prefix)]
        raise HarnessError(
            f"{missing[0]} is not a published {source} file. {_describe_available(source, known, ds)}. "
            "Choose an N/subset that exists, or write your own with `harness.describe.write_descriptions`."
        )
    files = {k: store.path(r) for k, r in rel.items()}
    return load_description_files(files, n, class_ids, on_short=on_short)


def load_job_descriptions(ref: dict, n: int, cache_dir: str | None, splits_root: str | None) -> DescriptionSet:
    """The descriptions a job's reference (`JobSpec.descriptions`) points at: a local folder
    (the embedded dataset) or the pinned upstream store. Used by the engine and by the up-front
    check of `harness run`, which finds a missing class before any training."""
    split = ref.get("split")  # per-split files (OST's K600 zero-shot splits)
    if ref["root"] is not None:
        return load_descriptions(ref["source"], Path(ref["root"]), ref["dataset_key"], n, ref["class_ids"],
                                 subset=ref["subset"], split=split)

    store = UpstreamStore(cache_dir=Path(cache_dir) / "upstream" if cache_dir else None,
                          splits_root=Path(splits_root) if splits_root else None)
    return load_upstream_descriptions(store, ref["source"], ref["dataset_key"], n, ref["class_ids"],
                                      subset=ref["subset"], split=split)
