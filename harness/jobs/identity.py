"""A job's identity rules as plain values (standard library only): the hash of a record
(`canonical_json`, `short_hash`), the keys that never enter a job id (execution-only; added
keys at their default), and the version of the records' layout (`RESULTS_FORMAT`).

Why a module of its own: the results store, `harness status` and the report tables read these
without loading the typed job (harness/jobs/spec.py imports the method configurations, and so
torch); `harness status` stays a fraction of a second.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

#: Schedule keys that change how a job runs, not what it computes: recorded in the job's config,
#: never hashed into its id (another machine, more memory or more workers -> the same job).
#: Extend here when adding such a key. `micro_batch` (and the number of processes, which is not
#: a key at all) qualify because the optimiser update over the global batch is the unit of
#: training (harness.engine.batches / update): tests/test_training_arithmetic.py trains 102 clips
#: at batch 32 with micro-batch 32 / 16 / 8 and on 1 vs 2 processes and gets the same updates, the
#: same lr at each and the same float64 weights (1e-8 relative).
EXECUTION_ONLY_KEYS: tuple[str, ...] = ("num_workers", "cpu_threads", "micro_batch", "grad_checkpointing",
                                        "log_backend")
#: The same for `data.*` keys (decoder threads change CPU time, never the decoded frames).
EXECUTION_ONLY_DATA_KEYS: tuple[str, ...] = ("decode_threads",)
#: Schedule keys added after results existed: left out of a job's identity while at this default
#: value, so the ids of jobs that never used them stay what they were.
IDENTITY_DEFAULTS: dict[str, object] = {"token_mask": 0.0}

#: Version of the layout of a job's config/metrics records and of its identity. Bump it when
#: either changes meaning: folders written by an older format are rerun, not reused (and stay
#: readable by `harness report`, in rows of their own). 3: the optimiser update over the global
#: batch is the unit of training (per-update lr, short last batch as its own update, per-sample
#: randomness), so results of format 2 with the same settings were computed differently.
RESULTS_FORMAT = 3


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]
