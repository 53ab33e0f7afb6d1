"""FROSTER's rephrased class names (harness.data.rephrased): files written as FROSTER publishes them
(JSON `{"<index>": "<Name>: <description>"}`, its own order and spelling) matched to class names,
pinned rows in the manifest, the embedded fallback, clear errors, and the job record."""
from __future__ import annotations

import csv
import hashlib
import json

import open_clip
import pytest

from harness.data import rephrased
from harness.data.embedded import MAIN_CLASSES, REPHRASED, ZS_CLASSES
from harness.data.upstream import load_manifest
from harness.errors import HarnessError
from harness.jobs.expand import RunRequest, expand_jobs
from methods.froster import TEMPLATES

COMMIT = "230ae8831b352bec80f5e8695691282198ca2ab2"


def _write_froster_files(root, files: dict[str, list[str]], monkeypatch) -> None:
    """The dataset's FROSTER files under `root/froster/...` and a manifest pinning their sha256."""
    manifest = root / "manifest.tsv"
    root.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "repo", "commit", "path", "bytes", "sha256", "url"])
        for rel, texts in files.items():
            data = json.dumps({str(i): t for i, t in enumerate(texts)}).encode()
            path = root / "splits" / "froster" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            writer.writerow(["froster", "Visual-AI/FROSTER", COMMIT, rel, len(data), hashlib.sha256(data).hexdigest(),
                             f"https://raw.githubusercontent.com/Visual-AI/FROSTER/{COMMIT}/{rel}"])
    monkeypatch.setattr("harness.data.upstream.DEFAULT_MANIFEST", manifest)


HMDB = {  # FROSTER's HMDB files: its own order (kick / kick ball swapped against the ViFi-CLIP CSV)
    "label_rephrase/hmdb_rephrased_classes.json": ["Kick: A person strikes out with a foot",
                                                   "Kick ball: A person kicks a ball with a foot",
                                                   "Drive a car: Someone steers a car on a road"],
    "zs_label_db/B2N_hmdb/train_rephrased.json": ["Kick ball: A person kicks a ball with a foot"],
    "zs_label_db/B2N_hmdb/test_rephrased.json": ["Kick: A person strikes out with a foot"],
}


def test_texts_found_by_name_not_index(tmp_path, monkeypatch):
    _write_froster_files(tmp_path, HMDB, monkeypatch)
    texts, record = rephrased.load_rephrased("hmdb51", ["kick ball", "kick", "drive car"], str(tmp_path / "cache"),
                                             str(tmp_path / "splits"))
    assert texts == ["Kick ball: A person kicks a ball with a foot", "Kick: A person strikes out with a foot",
                     "Drive a car: Someone steers a car on a road"]
    assert record["sources"] == [f"froster/{rel}" for rel in HMDB]
    assert record["sha256"] == hashlib.sha256(json.dumps(texts).encode()).hexdigest()


def test_missing_and_conflicting_texts_are_errors(tmp_path, monkeypatch):
    _write_froster_files(tmp_path, HMDB, monkeypatch)
    with pytest.raises(HarnessError, match=r"no rephrased class name for 'sword'.*froster\.rephrased=false"):
        rephrased.load_rephrased("hmdb51", ["kick", "sword"], str(tmp_path / "cache"), str(tmp_path / "splits"))
    (tmp_path / "videos" / "a").mkdir(parents=True)  # a user's folder of videos: no rephrased names
    with pytest.raises(HarnessError, match="has no rephrased class names"):
        rephrased.load_rephrased(f"folder:{tmp_path / 'videos'}", ["a"], None, None)
    conflicting = dict(HMDB, **{"zs_label_db/B2N_hmdb/test_rephrased.json": ["Kick: something else"]})
    _write_froster_files(tmp_path / "b", conflicting, monkeypatch)
    with pytest.raises(HarnessError, match="differs from the one in"):
        rephrased.load_rephrased("hmdb51", ["kick"], str(tmp_path / "b" / "cache"), str(tmp_path / "b" / "splits"))


def test_name_key_spellings():
    """Articles, case and punctuation do not count; FROSTER's 'Barbecuing' is K400's 'barbequing'."""
    assert rephrased.name_key("Driving a car") == rephrased.name_key("driving car")
    assert rephrased.name_key("Giving or receiving an award") == rephrased.name_key("giving or receiving award")
    assert rephrased.name_key("Barbecuing") == rephrased.name_key("barbequing")
    assert rephrased.name_key("kick") != rephrased.name_key("kick ball")


def test_every_file_is_pinned_at_the_commit():
    entries = {e.relpath: e for e in load_manifest()}
    for dataset in rephrased.FILES:
        for rel in rephrased.relpaths(dataset):
            entry = entries[rel]
            assert entry.commit == COMMIT and len(entry.sha256) == 64 and entry.url.endswith(f"/{COMMIT}/{entry.path}")
    assert sum(len(files) for files in rephrased.FILES.values()) == 14


def test_embedded_fallback_covers_every_class_and_fits_harness_tiny():
    """Hand-written texts for the 18 embedded classes in FROSTER's format; with FROSTER's longest
    template in front they fit harness-tiny's 32-token context (no truncation)."""
    names = [c.name for c in (*MAIN_CLASSES, *ZS_CLASSES)]
    texts, record = rephrased.load_rephrased("embedded", [c.name for c in MAIN_CLASSES])
    assert len(texts) == 12 and record["sources"] == ["harness.data.embedded.REPHRASED"]
    assert set(REPHRASED) == set(names)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    longest = max(TEMPLATES[:-1], key=len)
    for name, text in REPHRASED.items():
        head, _, description = text.partition(":")
        assert rephrased.name_key(head) == rephrased.name_key(name) and description.strip()
        assert len(tokenizer.encode(longest.format(head) + " " + text)) + 2 <= 32, name


def test_froster_jobs_record_their_rephrased_texts(harness_cache):
    base = dict(protocol="zero_shot", dataset="embedded", backbone="harness-tiny", pretrained=None, splits=[1],
                seed=1, schedule_overrides={}, data_overrides={}, profile=None, cache_dir=str(harness_cache))
    froster, plain = expand_jobs(RunRequest(methods=["froster", "vificlip"], method_options={}, **base))
    assert set(k for k in froster.file_provenance if k.startswith("rephrased:")) == {
        "rephrased:embedded", "rephrased:embedded_zs"}
    assert froster.file_provenance["rephrased:embedded"]["sha256"] == hashlib.sha256(
        json.dumps(REPHRASED, sort_keys=True).encode()).hexdigest()
    assert not any(k.startswith("rephrased:") for k in plain.file_provenance)
    (off,) = expand_jobs(RunRequest(methods=["froster"], method_options={"froster": {"rephrased": False}}, **base))
    assert not any(k.startswith("rephrased:") for k in off.file_provenance)
    assert off.job_id != froster.job_id
