"""The spot notice: SIGTERM asks the trainer to finish its step, checkpoint, and exit "preempted"."""

from __future__ import annotations

import os
import signal

from spottrain_contract.job import EXIT_FILE_ENV


class PreemptionNotice:
    def __init__(self):
        self.received = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True


def report_exit_code(code: int) -> None:
    """torchrun reports any failed worker as exit 1; the run script and the local supervisor read this file."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path:
        with open(path, "w") as out:
            out.write(str(code))
