"""Pinned upstream files: download, verification, cache repair, offline copy, trust on first use.

Downloads go to a local http.server on 127.0.0.1 (no network needed); the checks against the real
reference folder are skipped when ../shared/upstream is absent.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from harness.data.upstream import (
    DEFAULT_MANIFEST,
    ManifestEntry,
    UpstreamStore,
    fetch_command,
    file_sha256,
    load_manifest,
)
from harness.errors import HarnessError

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs ../shared/upstream")


class _Server:
    """A static file server in a thread that counts the requests it gets."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "www"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("one 1\n")
    (root / "a" / "two.txt").write_text("two 2\n")
    (root / "big.txt").write_text("no checksum known\n")
    server = _Server(root)
    yield root, server
    server.close()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _entries(base_url: str) -> list[ManifestEntry]:
    return [
        ManifestEntry("src", "o/r", "c0ffee", "a/one.txt", 6, _sha("one 1\n"), f"{base_url}/a/one.txt"),
        ManifestEntry("src", "o/r", "c0ffee", "a/two.txt", 6, _sha("two 2\n"), f"{base_url}/a/two.txt"),
        ManifestEntry("src", "o/r", "c0ffee", "big.txt", None, "", f"{base_url}/big.txt"),
    ]


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_fetch_via_url_verifies_and_caches(served, tmp_path):
    _, server = served
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(server.url))
    path = store.path("src/a/one.txt")
    assert path == tmp_path / "cache" / "src" / "a" / "one.txt"
    assert path.read_text() == "one 1\n"
    assert server.requests == ["/a/one.txt"]
    assert store.path("src/a/one.txt") == path
    assert server.requests == ["/a/one.txt"], "a verified cached file must not be downloaded again"
    assert store.provenance("src/a/one.txt")["sha256"] == _sha("one 1\n")
    assert store.provenance("src/a/one.txt")["tofu"] is False


def test_corrupted_cache_is_refetched(served, tmp_path):
    _, server = served
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(server.url))
    path = store.path("src/a/one.txt")
    path.write_text("damaged\n")
    assert store.path("src/a/one.txt").read_text() == "one 1\n"
    assert len(server.requests) == 2


def test_mismatch_after_refetch_names_file_and_hashes(served, tmp_path):
    root, server = served
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(server.url))
    store.path("src/a/two.txt").write_text("damaged\n")
    (root / "a" / "two.txt").write_text("upstream changed\n")
    with pytest.raises(HarnessError) as err:
        store.path("src/a/two.txt")
    msg = str(err.value)
    assert "src/a/two.txt" in msg and _sha("two 2\n") in msg and _sha("upstream changed\n") in msg


def test_no_network_error_names_url_and_offline_option(tmp_path):
    url = _closed_port_url()
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(url), timeout=5)
    with pytest.raises(HarnessError) as err:
        store.path("src/a/one.txt")
    assert f"{url}/a/one.txt" in str(err.value) and "--splits-root" in str(err.value)


def test_offline_copy_from_splits_root(tmp_path):
    url = _closed_port_url()
    local = tmp_path / "offline" / "src" / "a"
    local.mkdir(parents=True)
    (local / "one.txt").write_text("one 1\n")
    (local / "two.txt").write_text("tampered\n")
    store = UpstreamStore(
        cache_dir=tmp_path / "cache", splits_root=tmp_path / "offline", manifest=_entries(url), timeout=5
    )
    assert store.path("src/a/one.txt").read_text() == "one 1\n"
    assert (tmp_path / "cache" / "src" / "a" / "one.txt").is_file()
    with pytest.raises(HarnessError) as err:
        store.path("src/a/two.txt")
    assert str(local / "two.txt") in str(err.value) and _sha("two 2\n") in str(err.value)


def test_trust_on_first_use_records_and_detects_change(served, tmp_path):
    root, server = served
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(server.url))
    assert store.provenance("src/big.txt") == {
        "path": "src/big.txt",
        "url": f"{server.url}/big.txt",
        "commit": "c0ffee",
        "sha256": None,
        "tofu": True,
    }
    store.path("src/big.txt")
    record = json.loads((tmp_path / "cache" / "tofu.json").read_text())
    assert record["src/big.txt"]["sha256"] == _sha("no checksum known\n")
    prov = store.provenance("src/big.txt")
    assert prov["tofu"] is True and prov["sha256"] == _sha("no checksum known\n")
    # The upstream file changes and the cached copy is lost: the new download must be refused.
    (root / "big.txt").write_text("something else\n")
    (tmp_path / "cache" / "src" / "big.txt").unlink()
    with pytest.raises(HarnessError) as err:
        store.path("src/big.txt")
    assert "tofu.json" in str(err.value) and _sha("something else\n") in str(err.value)


def test_fetch_all_report_and_command(served, tmp_path, capsys, monkeypatch):
    _, server = served
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(server.url))
    seen = []
    rows = store.fetch_all(only=["src/a/"], progress=seen.append)
    assert [(r["path"], r["status"]) for r in rows] == [
        ("src/a/one.txt", "fetched"),
        ("src/a/two.txt", "fetched"),
    ]
    assert seen == rows
    assert [r["status"] for r in store.fetch_all(only=["*one*"])] == ["ok"]
    with pytest.raises(HarnessError, match="matches no pinned upstream file"):
        store.fetch_all(only=["nope/"])

    manifest = tmp_path / "manifest.tsv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "repo", "commit", "path", "bytes", "sha256", "url"])
        for e in _entries(server.url)[:2]:
            writer.writerow([e.source, e.repo, e.commit, e.path, e.bytes, e.sha256, e.url])
    monkeypatch.setattr("harness.data.upstream.DEFAULT_MANIFEST", manifest)
    assert fetch_command(None, tmp_path / "cache2", None) == 0
    out = capsys.readouterr().out
    assert "fetched" in out and "src/a/two.txt" in out
    assert (tmp_path / "cache2" / "upstream" / "src" / "a" / "two.txt").is_file()


def test_fetch_all_stops_downloading_after_connection_failure(tmp_path):
    store = UpstreamStore(cache_dir=tmp_path / "cache", manifest=_entries(_closed_port_url()), timeout=5)
    rows = store.fetch_all()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert "earlier download failed" in rows[1]["error"]


def test_manifest_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "m.tsv"
    bad.write_text("source\trepo\tcommit\tpath\tbytes\tsha256\turl\nsrc\to/r\tc\tp\t1\tnothex\thttps://x/p\n")
    with pytest.raises(HarnessError, match=r"m\.tsv:2: sha256 'nothex'"):
        load_manifest(bad)
    with pytest.raises(HarnessError, match="not a pinned upstream file"):
        UpstreamStore(cache_dir=tmp_path, manifest=[]).path("vifi-clip/labels/x.csv")


#: Sources pinned after the reference folder ../shared/upstream was made: their rows are in the
#: packaged manifest only, and their files are not in that folder.
NOT_IN_REFERENCE = {"froster": 14}


def test_packaged_manifest_layout():
    entries = load_manifest()
    assert len(entries) == 150 + sum(NOT_IN_REFERENCE.values())
    assert {e.source for e in entries} == {"vifi-clip", "etl4video", "ost", *NOT_IN_REFERENCE}
    assert {s: sum(e.source == s for e in entries) for s in NOT_IN_REFERENCE} == NOT_IN_REFERENCE
    tofu = sorted(e.relpath for e in entries if not e.sha256)
    assert tofu == [
        "vifi-clip/datasets_splits/base2novel_splits/k400_splits/base_train.txt",
        "vifi-clip/datasets_splits/k400_splits/train.txt",
    ]
    assert all(e.url.endswith(f"/{e.commit}/{e.path}") for e in entries)


@needs_upstream
def test_packaged_manifest_matches_reference_copy():
    """The reference folder's manifest, plus the rows of the sources pinned after it."""
    lines = DEFAULT_MANIFEST.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split("\t", 1)[0] not in NOT_IN_REFERENCE]
    assert "".join(kept) == (UPSTREAM / "MANIFEST.tsv").read_text()


@needs_upstream
def test_every_pinned_file_in_reference_folder_verifies():
    checked = 0
    for entry in load_manifest():
        local = UPSTREAM / entry.relpath
        if entry.sha256 and local.is_file():
            assert file_sha256(local) == entry.sha256, entry.relpath
            checked += 1
    assert checked == 148


@needs_upstream
def test_offline_copy_of_real_files_from_reference_folder(tmp_path):
    store = UpstreamStore(cache_dir=tmp_path / "cache", splits_root=UPSTREAM)
    rows = store.fetch_all(only=["vifi-clip/labels/hmdb_51_labels.csv", "etl4video/description/2_s_*hmdb*"])
    assert {r["status"] for r in rows} == {"copied"} and len(rows) == 4
    path = store.path("vifi-clip/labels/hmdb_51_labels.csv")
    assert path.read_text().splitlines()[1] == "0,brush hair"
    assert [r["status"] for r in store.fetch_all(only=["vifi-clip/labels/hmdb_51_labels.csv"])] == ["ok"]
