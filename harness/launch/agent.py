"""torchrun inside a SLURM task, surviving SLURM's end-of-allocation signal.

SLURM signals every process of the job step; torchrun's agent does not handle USR2, whose
default action would kill it (and with it every worker, before they checkpoint). This entry
ignores the signal, then runs torchrun unchanged. The workers inherit "ignored" and install
their own handler (harness/preemption.py) as soon as they start.
Usage: python -m harness.launch.agent <torchrun arguments>
"""
from __future__ import annotations

import os
import signal
import sys

from harness.preemption import PREEMPTIBLE_ENV, signal_number


def main() -> None:
    signal.signal(signal_number(os.environ.get(PREEMPTIBLE_ENV, "USR2")), signal.SIG_IGN)
    from torch.distributed.run import main as torchrun

    sys.argv[0] = "torchrun"
    torchrun()


if __name__ == "__main__":
    main()
