"""One torchrun process of a launcher task's job: read the job (`launcher/job.json`, written by
the task, which holds the job's lock), install the preemption handler, run the job. Exit 0 when
it finished or failed (its error.json says why), `preemption.EXIT_PREEMPTED` when it stopped for
the allocation's end (rank 0 writes where, `launcher/stopped_at`, for the requeue record).
Usage: python -m harness.launch.worker <job.json>
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import preemption


def main(argv: list[str] | None = None) -> int:
    from harness import api
    from harness.atomic import atomic_write_text
    from harness.distributed import rank0
    from harness.jobs.spec import JobSpec
    from harness.store import RunStore

    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    preemption.enable_from_environment()
    job = JobSpec.from_dict(spec["job"])
    try:
        api.run_claimed_job(job, RunStore(Path(spec["results_dir"])), progress=rank0())
    except preemption.Preempted as err:
        if rank0():
            atomic_write_text(spec_path.with_name("stopped_at"), (preemption.last_boundary() or str(err)) + "\n")
        return preemption.EXIT_PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
