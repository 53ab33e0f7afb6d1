"""Write MSTA class descriptions for a new class list with an LLM.

MSTA's consistency loss needs N spatial and N temporal sentences per class. The upstream ones
(ETL4Video) exist only for HMDB, UCF, K400, K600 and SSv2; for any other dataset this module asks an
OpenAI-compatible chat-completions endpoint for them and writes the same JSON format
(`{n}_{s,t}_description_<key>.json`), which `harness.data.descriptions` then loads like the
upstream files.

Every answer is cached on disk under sha256(request) so that re-running gives the same sentences
without new requests (LLM answers are not reproducible otherwise), and a provenance file records the
endpoint, model and prompts used. The endpoint, model and key default to the environment variables
`HARNESS_LLM_URL`, `HARNESS_LLM_MODEL`, `HARNESS_LLM_KEY`. Only the stdlib is used for HTTP.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.errors import HarnessError
from harness.paths import cache_root

PREFIX = "A video about"
SYSTEM_PROMPT = (
    "You write short descriptions of human actions for training a video recognition model. "
    "Answer with the requested sentences only, one per line."
)
_KIND_PROMPTS = {
    "s": (
        'Describe what can be SEEN in a video of the action "{name}": the people, objects, body parts '
        "and scene (spatial appearance), not how it unfolds."
    ),
    "t": (
        'Describe how the action "{name}" UNFOLDS OVER TIME in a video: the sequence and direction of '
        "the movements (temporal dynamics), not the scene."
    ),
}
_FORMAT = (
    " Write exactly {n} different descriptions, each a single sentence of at most 15 words that starts "
    'with "' + PREFIX + '". One per line, no numbering, no other text.'
)
_ENV = {"endpoint": "HARNESS_LLM_URL", "model": "HARNESS_LLM_MODEL", "api_key": "HARNESS_LLM_KEY"}


def build_prompt(class_name: str, kind: str, n: int) -> str:
    """The user prompt for one class and kind ('s' spatial, 't' temporal)."""
    return _KIND_PROMPTS[kind].format(name=class_name) + _FORMAT.format(n=n)


def parse_answer(text: str, n: int) -> list[str]:
    """The first `n` lines of an answer that start with "A video about" (bullets/numbers stripped)."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = (
            re.sub(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s*", "", line).strip().strip('"\u201c\u201d').strip()
        )
        if line.lower().startswith(PREFIX.lower()):
            sentences.append(line)
    return sentences[:n]


def default_llm_cache_dir() -> Path:
    """`$HARNESS_CACHE/llm`, else `~/.cache/harness/llm`."""
    return cache_root() / "llm"


def chat_completions_url(endpoint: str) -> str:
    """Accept a base URL (`https://host/v1`) or the full `.../chat/completions` URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def _request(url: str, model: str, api_key: str | None, messages: list[dict], timeout: float) -> str:
    body = json.dumps({"model": model, "messages": messages}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise HarnessError(
            f"LLM endpoint {url} answered HTTP {exc.code} {exc.reason}: {detail}. "
            f"Check {_ENV['endpoint']}, {_ENV['model']} and {_ENV['api_key']}."
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise HarnessError(
            f"cannot reach the LLM endpoint {url} ({getattr(exc, 'reason', exc)}); set {_ENV['endpoint']} "
            "to an OpenAI-compatible chat-completions URL that this machine can reach"
        ) from exc
    except json.JSONDecodeError as exc:
        raise HarnessError(f"LLM endpoint {url} did not answer JSON ({exc.msg})") from exc
    try:
        return str(payload["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError) as exc:
        raise HarnessError(
            f"LLM endpoint {url} answered without choices[0].message.content: {json.dumps(payload)[:300]}"
        ) from exc


def _ask(
    class_name: str,
    kind: str,
    n: int,
    url: str,
    model: str,
    api_key: str | None,
    cache_dir: Path,
    timeout: float,
) -> tuple[list[str], str]:
    """N sentences for one class/kind, from the cache or the endpoint; (sentences, cache key)."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": build_prompt(class_name, kind, n)},
    ]
    key = hashlib.sha256(
        json.dumps({"model": model, "messages": messages}, sort_keys=True).encode()
    ).hexdigest()
    cache_file = cache_dir / f"{key}.json"
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text(encoding="utf-8"))
            sentences = parse_answer(cached["answer"], n)
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            sentences = []  # a damaged cache entry is simply asked again
        if len(sentences) == n:
            return sentences, key
    answer = _request(url, model, api_key, messages, timeout)
    sentences = parse_answer(answer, n)
    if len(sentences) < n:
        raise HarnessError(
            f"the LLM ({model} at {url}) gave {len(sentences)} usable line(s) instead of {n} for class "
            f"{class_name!r} ({'spatial' if kind == 's' else 'temporal'}); each must start with {PREFIX!r}. "
            f"Its answer was: {answer[:300]!r}. Run again (nothing was cached) or use a stronger model."
        )
    record = {"model": model, "endpoint": url, "messages": messages, "answer": answer}
    atomic_write_text(cache_file, json.dumps(record, indent=2) + "\n")
    return sentences, key


def write_descriptions(
    class_names: Sequence[str],
    out_dir: Path | str,
    dataset_key: str,
    n: int = 2,
    endpoint: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    dry_run: bool = False,
    cache_dir: Path | str | None = None,
    timeout: float = 120.0,
) -> dict[str, Path]:
    """Write `{n}_s_description_<key>.json` and `{n}_t_description_<key>.json` under `out_dir`.

    Class ids in the files are the positions in `class_names` (the order of the dataset's class CSV).
    Returns {'s': path, 't': path}; with `dry_run` the prompts are printed and nothing is written
    or requested (the returned paths are where the files would go).
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", dataset_key):
        raise HarnessError(f"dataset key {dataset_key!r} may only contain letters, digits, '_' and '-'")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HarnessError(f"number of descriptions per class N must be a positive integer, got {n!r}")
    names = [str(c).strip() for c in class_names]
    if not names or any(not c for c in names):
        raise HarnessError("class_names must be a non-empty list of non-empty class names")
    out_dir = Path(out_dir).expanduser()
    targets = {k: out_dir / f"{n}_{k}_description_{dataset_key}.json" for k in _KIND_PROMPTS}
    if dry_run:
        for cid, name in enumerate(names):
            for kind in _KIND_PROMPTS:
                print(f"[{cid} {name} {kind}] {build_prompt(name, kind, n)}")
        return targets
    endpoint = endpoint or os.environ.get(_ENV["endpoint"])
    model = model or os.environ.get(_ENV["model"])
    api_key = api_key if api_key is not None else os.environ.get(_ENV["api_key"])
    if not endpoint or not model:
        raise HarnessError(
            f"no LLM configured: set {_ENV['endpoint']} (an OpenAI-compatible chat-completions URL, e.g. "
            f"https://api.openai.com/v1) and {_ENV['model']} (and {_ENV['api_key']} if it needs a key), "
            "or pass endpoint=/model=; use dry_run to only see the prompts"
        )
    url = chat_completions_url(endpoint)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_llm_cache_dir()
    results: dict[str, dict[str, list[str]]] = {k: {} for k in _KIND_PROMPTS}
    keys: dict[str, dict[str, str]] = {k: {} for k in _KIND_PROMPTS}
    for cid, name in enumerate(names):
        for kind in _KIND_PROMPTS:
            sentences, key = _ask(name, kind, n, url, model, api_key, cache, timeout)
            results[kind][str(cid)] = sentences
            keys[kind][str(cid)] = key
    for kind, path in targets.items():
        atomic_write_text(path, json.dumps(results[kind], indent=4, ensure_ascii=False) + "\n")
    provenance = {
        "model": model,
        "endpoint": url,
        "n": n,
        "dataset_key": dataset_key,
        "classes": names,
        "system_prompt": SYSTEM_PROMPT,
        "prompts": {k: build_prompt("{name}", k, n) for k in _KIND_PROMPTS},
        "cache_keys": keys,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(
        out_dir / f"{n}_description_{dataset_key}.provenance.json",
        json.dumps(provenance, indent=2, ensure_ascii=False) + "\n",
    )
    return targets
