"""Pinned upstream protocol files (split lists, label CSVs, class descriptions): fetch, verify, cache.

The benchmark's protocols are defined by files that other projects publish (ViFi-CLIP's split lists,
ETL4Video's and OST's LLM descriptions). This project must not redistribute them, so it ships only
their metadata (`upstream_manifest.tsv`: pinned commit URL + sha256) and, on the user's machine,
gets each file from

1. the cache (`$HARNESS_CACHE/upstream` or `~/.cache/harness/upstream`) if its sha256 still matches,
2. else a local folder laid out like the upstream one (`--splits-root DIR`, for offline machines),
3. else the pinned URL (stdlib urllib),

and verifies the sha256 every time, so that a result can never silently be computed on a different
split list. Two upstream files are too large for the reference copy and have no known checksum; for
them the first download is trusted and its sha256 is recorded in `<cache>/tofu.json` (trust on first
use), and later uses are verified against that record. `provenance()` reports which kind of trust a
file has, for the result files.

The local path of an entry is `<source>/<path>` (e.g. `vifi-clip/labels/hmdb_51_labels.csv`), the
same layout as the reference folder `shared/upstream/`, so that folder can be used as `splits_root`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import difflib
import fnmatch
import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import atomic_copy, atomic_write_bytes
from harness.errors import HarnessError
from harness.paths import cache_root

MANIFEST_COLUMNS = ("source", "repo", "commit", "path", "bytes", "sha256", "url")
DEFAULT_MANIFEST = Path(__file__).with_name("upstream_manifest.tsv")
TOFU_FILE = "tofu.json"
OFFLINE_HINT = (
    "To work offline, pass `--splits-root DIR` with DIR laid out like the upstream folder "
    "(DIR/vifi-clip/..., DIR/etl4video/..., DIR/ost/...): a copy of it, or the `<cache>/upstream/` "
    "folder that `harness data fetch` fills on a machine with network access."
)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    """One pinned upstream file. `sha256` is empty when nobody knows it yet (trust on first use)."""

    source: str
    repo: str
    commit: str
    path: str
    bytes: int | None
    sha256: str
    url: str

    @property
    def relpath(self) -> str:
        """Where the file lives below an upstream root or the cache: `<source>/<path>`."""
        return f"{self.source}/{self.path}"


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in chunks so large split lists don't need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def load_manifest(path: Path | str | None = None) -> list[ManifestEntry]:
    """Read a manifest TSV (the packaged one by default); malformed rows raise naming file and line."""
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read the upstream manifest {path}: {exc.strerror or exc}") from exc
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows or tuple(rows[0]) != MANIFEST_COLUMNS:
        raise HarnessError(
            f"{path}:1: the upstream manifest must start with the header "
            f"{chr(9).join(MANIFEST_COLUMNS)!r} (tab-separated); got {rows[0] if rows else 'an empty file'}"
        )
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(MANIFEST_COLUMNS):
            raise HarnessError(
                f"{path}:{lineno}: expected {len(MANIFEST_COLUMNS)} tab-separated columns "
                f"({', '.join(MANIFEST_COLUMNS)}), got {len(row)}; fix the row"
            )
        source, repo, commit, relpath, size, sha, url = (cell.strip() for cell in row)
        if sha and not _is_sha256(sha):
            raise HarnessError(
                f"{path}:{lineno}: sha256 {sha!r} of {relpath} is not 64 lowercase hex digits; "
                "fix it or leave it empty to trust the file on first use"
            )
        if not url.startswith(("https://", "http://")):
            raise HarnessError(f"{path}:{lineno}: url {url!r} of {relpath} must be an http(s) URL")
        if not size:
            nbytes = None
        elif size.isdigit():
            nbytes = int(size)
        else:
            raise HarnessError(f"{path}:{lineno}: bytes {size!r} of {relpath} must be an integer or empty")
        entry = ManifestEntry(source, repo, commit, relpath, nbytes, sha, url)
        if entry.relpath in seen:
            raise HarnessError(
                f"{path}:{lineno}: {entry.relpath} is listed twice (first on line {seen[entry.relpath]})"
            )
        seen[entry.relpath] = lineno
        entries.append(entry)
    return entries


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE/upstream`, else `~/.cache/harness/upstream` (one cache shared by all runs)."""
    return cache_root() / "upstream"


class _NetworkDownError(HarnessError):
    """The connection itself failed (not an HTTP error): later URLs would fail the same way."""


class UpstreamStore:
    """Verified local copies of the pinned upstream files (see the module docstring for the order)."""

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        splits_root: Path | str | None = None,
        manifest: Sequence[ManifestEntry] | Path | str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.splits_root = Path(splits_root).expanduser() if splits_root is not None else None
        if self.splits_root is not None and not self.splits_root.is_dir():
            raise HarnessError(
                f"--splits-root {self.splits_root} is not a directory; point it to a folder laid out like "
                "the upstream folder (DIR/vifi-clip/labels/..., DIR/etl4video/description/..., DIR/ost/...)"
            )
        if manifest is None or isinstance(manifest, (str, Path)):
            self.manifest_path = Path(manifest) if manifest is not None else DEFAULT_MANIFEST
            entries = load_manifest(self.manifest_path)
        else:
            self.manifest_path = None
            entries = list(manifest)
        self.entries: dict[str, ManifestEntry] = {e.relpath: e for e in entries}
        self.timeout = timeout

    # ---- lookup -------------------------------------------------------------------------------
    def entry(self, relpath: str) -> ManifestEntry:
        """The manifest entry for `relpath` (`<source>/<path>`); unknown paths raise with close matches."""
        key = relpath.replace("\\", "/")
        key = key.removeprefix("./")
        if key in self.entries:
            return self.entries[key]
        close = difflib.get_close_matches(key, list(self.entries), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = self.manifest_path or "the given manifest"
        raise HarnessError(
            f"{relpath!r} is not a pinned upstream file (not in {where}).{hint} Paths are "
            "'<source>/<path>', e.g. 'vifi-clip/labels/hmdb_51_labels.csv'; `harness data fetch` lists "
            "them all."
        )

    def cached_path(self, relpath: str) -> Path:
        """Where the verified copy of `relpath` lives (whether or not it is there yet)."""
        return self.cache_dir / self.entry(relpath).relpath

    # ---- trust on first use -------------------------------------------------------------------
    @property
    def tofu_path(self) -> Path:
        return self.cache_dir / TOFU_FILE

    def _tofu(self) -> dict[str, dict]:
        if not self.tofu_path.exists():
            return {}
        try:
            data = json.loads(self.tofu_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(
                f"{self.tofu_path} (the record of first-use checksums) is unreadable: {exc}. "
                "Delete it to trust the affected files again on their next download."
            ) from exc
        if not isinstance(data, dict):
            raise HarnessError(f"{self.tofu_path} must hold a JSON object; delete it to start over")
        return data

    def _record_tofu(self, entry: ManifestEntry, sha: str, origin: str) -> None:
        data = self._tofu()
        data[entry.relpath] = {
            "sha256": sha,
            "url": entry.url,
            "origin": origin,
            "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_bytes(self.tofu_path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def _expected(self, entry: ManifestEntry) -> tuple[str | None, bool]:
        """(expected sha256 or None if unknown yet, whether it comes from trust on first use)."""
        if entry.sha256:
            return entry.sha256, False
        record = self._tofu().get(entry.relpath)
        return (record.get("sha256") if isinstance(record, dict) else None), True

    def provenance(self, relpath: str) -> dict:
        """What a result should record about the file: url, sha256 (None if never fetched), tofu flag."""
        entry = self.entry(relpath)
        sha, tofu = self._expected(entry)
        return {"path": entry.relpath, "url": entry.url, "commit": entry.commit, "sha256": sha, "tofu": tofu}

    # ---- resolution ---------------------------------------------------------------------------
    def path(self, relpath: str) -> Path:
        """A verified local copy of the pinned file `relpath` (fetching or copying it if needed)."""
        return self._resolve(self.entry(relpath))[0]

    def _mismatch(
        self, entry: ManifestEntry, where: str, expected: str, actual: str, tofu: bool
    ) -> HarnessError:
        if tofu:
            return HarnessError(
                f"{where}: sha256 {actual} of {entry.relpath} differs from {expected}, recorded in "
                f"{self.tofu_path} when the file was first used (its URL: {entry.url}). The upstream file "
                "changed or this copy is damaged; if the change is intended, delete its entry from that "
                "file and fetch again."
            )
        return HarnessError(
            f"{where}: sha256 mismatch for {entry.relpath}: expected {expected} (pinned in the manifest), "
            f"got {actual}. The file is not the pinned upstream version; replace it with the file from "
            f"{entry.url}."
        )

    def _resolve(self, entry: ManifestEntry, allow_network: bool = True) -> tuple[Path, str]:
        """(verified path, how: 'ok' cached / 'copied' from splits_root / 'fetched' from the URL)."""
        expected, tofu = self._expected(entry)
        target = self.cache_dir / entry.relpath
        if target.is_file():
            actual = file_sha256(target)
            if expected is None:
                self._record_tofu(entry, actual, origin="cache")
                return target, "ok"
            if actual == expected:
                return target, "ok"
            # A damaged cached copy is not the user's fault: get a fresh one below.
        if self.splits_root is not None:
            local = self.splits_root / entry.relpath
            if local.is_file():
                actual = file_sha256(local)
                if expected is not None and actual != expected:
                    raise self._mismatch(entry, f"--splits-root file {local}", expected, actual, tofu)
                atomic_copy(local, target)
                if expected is None:
                    self._record_tofu(entry, actual, origin=f"splits_root:{local}")
                return target, "copied"
        if not allow_network:
            raise HarnessError(
                f"{entry.url}: not downloaded (an earlier download failed to connect). {OFFLINE_HINT}"
            )
        data = self._download(entry)
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and actual != expected:
            raise self._mismatch(entry, f"download of {entry.url}", expected, actual, tofu)
        atomic_write_bytes(target, data)
        if expected is None:
            self._record_tofu(entry, actual, origin="url")
        return target, "fetched"

    def _download(self, entry: ManifestEntry) -> bytes:
        request = urllib.request.Request(entry.url, headers={"User-Agent": "harness-upstream-fetch"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise HarnessError(
                f"download of {entry.relpath} failed: {entry.url} answered HTTP {exc.code} {exc.reason}. "
                f"{OFFLINE_HINT}"
            ) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__ + (f": {exc}" if str(exc) else "")
            raise _NetworkDownError(
                f"download of {entry.relpath} failed: cannot reach {entry.url} ({reason}). {OFFLINE_HINT}"
            ) from exc

    # ---- bulk ---------------------------------------------------------------------------------
    def select(self, only: Iterable[str] | None = None) -> list[ManifestEntry]:
        """Entries matching `only` (exact paths, folder prefixes or glob patterns); all if None."""
        if only is None:
            return list(self.entries.values())
        patterns = [p.strip() for p in only if p.strip()]
        chosen: dict[str, ManifestEntry] = {}
        for pattern in patterns:
            prefix = pattern.rstrip("/") + "/"
            hits = [
                e
                for e in self.entries.values()
                if e.relpath == pattern
                or e.relpath.startswith(prefix)
                or fnmatch.fnmatchcase(e.relpath, pattern)
            ]
            if not hits:
                raise HarnessError(
                    f"--only {pattern!r} matches no pinned upstream file; give a path like "
                    "'vifi-clip/labels/hmdb_51_labels.csv', a folder like 'etl4video/' or a glob like "
                    "'*hmdb*'"
                )
            chosen.update((e.relpath, e) for e in hits)
        return [e for e in self.entries.values() if e.relpath in chosen]

    def fetch_all(
        self,
        only: Iterable[str] | None = None,
        progress: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Make every selected file present and verified; one report row per file, failures included.

        After a connection failure the remaining downloads are skipped (reported as failed) instead of
        each waiting for its own timeout; files still come from the cache or `splits_root`.
        """
        rows: list[dict] = []
        network_ok = True
        for entry in self.select(only):
            row: dict = {"path": entry.relpath, "status": "failed", "sha256": None, "error": None}
            try:
                local, status = self._resolve(entry, allow_network=network_ok)
                row.update(status=status, sha256=self._expected(entry)[0], local=str(local))
            except _NetworkDownError as exc:
                network_ok = False
                row["error"] = str(exc)
            except HarnessError as exc:
                row["error"] = str(exc)
            rows.append(row)
            if progress is not None:
                progress(row)
        return rows


def format_report(rows: Sequence[dict]) -> str:
    """A fixed-width table of `fetch_all` rows: status, short sha256, path."""
    lines = [f"{'status':<8} {'sha256':<12} path"]
    for row in rows:
        sha = (row.get("sha256") or "-")[:12]
        lines.append(f"{row['status']:<8} {sha:<12} {row['path']}")
    return "\n".join(lines)


def fetch_command(
    splits_root: Path | str | None = None,
    cache_dir: Path | str | None = None,
    only: Iterable[str] | None = None,
) -> int:
    """`harness data fetch`: get and verify the pinned files, print a table; 0 if all are present.

    `cache_dir` is the harness cache root (like `$HARNESS_CACHE` and `harness run --cache`): the files
    go to `<cache_dir>/upstream/`, where the runs look for them.
    """
    store = UpstreamStore(
        cache_dir=Path(cache_dir).expanduser() / "upstream" if cache_dir is not None else None,
        splits_root=splits_root,
    )
    rows = store.fetch_all(only=only)
    print(format_report(rows))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"\n{len(rows)} files ({summary}); cache: {store.cache_dir}")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        print(f"\n{len(failed)} file(s) failed:", file=sys.stderr)
        for row in failed:
            print(f"- {row['path']}: {row['error']}", file=sys.stderr)
        return 1
    return 0
