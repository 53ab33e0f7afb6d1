"""LLM-rephrased class names for FROSTER ("Abseiling: This video shows the process of ...").

FROSTER scores each class by a text built from a rephrased form of its name and publishes those
texts per dataset as JSON objects `{"<index>": "<Name>: <description>"}` (Visual-AI/FROSTER @
230ae88: `label_rephrase/` for the full and K600 zero-shot class lists, `zs_label_db/B2N_<ds>/`
for the base-to-novel halves). They are pinned in `upstream_manifest.tsv` (source `froster`) and
fetched and verified like the split files; the project ships no copy.

Their indices follow FROSTER's own label files, which do not always follow the ViFi-CLIP label
CSVs this project uses (FROSTER's HMDB file swaps "kick"/"kick ball"), and their names are
spelled their own way ("Driving a car" for "driving car", "Barbecuing" for "barbequing"). So a
class is found by its name: the part before ':' and the class name compared in lower case, on
letters and digits, without the articles a / an / the, plus the one spelling alias below. Every
file of a dataset is read (their texts agree where they overlap), and a class without a text is
an error naming it. Every class of every ViFi-CLIP class list of K400, HMDB51, UCF101, SSv2 and
the K600 zero-shot splits has one.

The generated embedded datasets have no FROSTER files: their rephrased names are written by hand
next to the class definitions (`harness.data.embedded.REPHRASED`), as their descriptions are, and
recorded in each job by their sha256.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.data.datasets import get_dataset
from harness.data.embedded import REPHRASED
from harness.data.upstream import UpstreamStore
from harness.errors import HarnessError

SOURCE = "froster"
#: Per dataset, the FROSTER files (below the `froster/` upstream folder) its rephrased texts come
#: from: the ones FROSTER's B/16 scripts load (script/training/temporal_b16, script/testing/temporal_test_b16).
FILES: dict[str, tuple[str, ...]] = {
    "k400": ("label_rephrase/k400_rephrased_classes.json", "zs_label_db/B2N_k400/train_rephrased.json",
             "zs_label_db/B2N_k400/test_rephrased.json"),
    "hmdb51": ("label_rephrase/hmdb_rephrased_classes.json", "zs_label_db/B2N_hmdb/train_rephrased.json",
               "zs_label_db/B2N_hmdb/test_rephrased.json"),
    "ucf101": ("label_rephrase/ucf101_rephrased_classes.json", "zs_label_db/B2N_ucf101/train_rephrased.json",
               "zs_label_db/B2N_ucf101/test_rephrased.json"),
    "ssv2": ("zs_label_db/B2N_ssv2/train_rephrased.json", "zs_label_db/B2N_ssv2/test_rephrased.json"),
    "k600": tuple(f"label_rephrase/k600_split{s}_rephrased_classes.json" for s in (1, 2, 3)),
}
#: Spellings of FROSTER's files that differ from the class name beyond articles (normalised form).
ALIASES = {"barbequing": "barbecuing"}
_ARTICLES = frozenset({"a", "an", "the"})


def name_key(name: str) -> str:
    """The form in which a class name and the head of a rephrased text are compared."""
    words = [w for w in re.findall(r"[a-z0-9]+", name.lower()) if w not in _ARTICLES]
    key = "".join(words)
    return ALIASES.get(key, key)


def relpaths(dataset: str) -> list[str]:
    """Manifest keys (`froster/<path>`) of the dataset's files; [] for a generated dataset."""
    return [f"{SOURCE}/{path}" for path in FILES.get(dataset, ())]


def _generated(dataset: str) -> bool:
    return get_dataset(dataset).generated


def available(dataset: str) -> bool:
    return dataset in FILES or _generated(dataset)


def _store(cache_dir: str | None, splits_root: str | None):
    return UpstreamStore(cache_dir=Path(cache_dir) / "upstream" if cache_dir else None,
                         splits_root=Path(splits_root) if splits_root else None)


def parse_file(path: Path) -> list[str]:
    """The texts of one FROSTER file, in index order; a malformed file raises naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        texts = [data[str(i)] for i in range(len(data))]
    except (OSError, ValueError, KeyError) as err:
        raise HarnessError(f"{path}: not a FROSTER rephrased-class file (a JSON object with keys '0'..'N-1'): "
                           f"{type(err).__name__}: {err}") from err
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise HarnessError(f"{path}: entry {bad[0]} is not a non-empty string")
    return texts


def _table(dataset: str, cache_dir: str | None, splits_root: str | None) -> tuple[dict[str, str], list[str]]:
    """name key -> text over all of the dataset's texts, and where they came from."""
    if _generated(dataset):
        return {name_key(name): text for name, text in REPHRASED.items()}, ["harness.data.embedded.REPHRASED"]
    if dataset not in FILES:
        raise HarnessError(f"dataset {dataset!r} has no rephrased class names (FROSTER publishes them for "
                           f"{', '.join(sorted(FILES))}; the embedded datasets generate theirs); run FROSTER with "
                           "--set froster.rephrased=false to use the plain class names")
    store, table, sources = _store(cache_dir, splits_root), {}, []
    for rel in relpaths(dataset):
        path = store.path(rel)
        sources.append(rel)
        for text in parse_file(path):
            key = name_key(text.split(":")[0])
            if table.setdefault(key, text) != text:
                raise HarnessError(f"{rel}: the rephrased text of {text.split(':')[0]!r} differs from the one in "
                                   f"{', '.join(sources[:-1])}; the pinned files must agree")
    return table, sources


def load_rephrased(dataset: str, classnames: Sequence[str], cache_dir: str | None = None,
                   splits_root: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """The rephrased text of each class name of `dataset`, in order, and a provenance record
    (the files or the generated table, and the sha256 of the texts handed out)."""
    table, sources = _table(dataset, cache_dir, splits_root)
    keys = [name_key(c) for c in classnames]
    clash = sorted({c for c, k in zip(classnames, keys) if keys.count(k) > 1})
    if clash:
        raise HarnessError(f"{dataset}: class names {clash} cannot be told apart when matched to rephrased texts")
    missing = [c for c, k in zip(classnames, keys) if k not in table]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise HarnessError(f"{dataset}: no rephrased class name for {shown} in {', '.join(sources)}; run FROSTER with "
                           "--set froster.rephrased=false to use the plain class names")
    texts = [table[k] for k in keys]
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    return texts, {"dataset": dataset, "sources": sources, "sha256": digest}


def provenance(dataset: str, cache_dir: str | None = None, splits_root: str | None = None) -> dict[str, Any]:
    """What a job records about the rephrased texts of `dataset` (part of its identity): the
    pinned files' provenance, or the sha256 of the generated table."""
    if _generated(dataset):
        return {"generated": "harness.data.embedded.REPHRASED",
                "sha256": hashlib.sha256(json.dumps(REPHRASED, sort_keys=True).encode()).hexdigest()}
    if dataset not in FILES:
        return {"missing": f"no rephrased class names for {dataset}"}
    store = _store(cache_dir, splits_root)
    return {rel: store.provenance(rel) for rel in relpaths(dataset)}
