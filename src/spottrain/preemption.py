"""The spot notice: SIGTERM asks the trainer to finish its step, checkpoint, and exit "preempted". A person's stop
sends the same SIGTERM; the local supervisor writes the stop-request file first, so the attempt ends "stopped".
And how a job ends, said to whoever runs it: its exit code, and why it failed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import NamedTuple, Optional

from spottrain_contract.job import DO_NOT_RESTART_EXIT_CODE, EXIT_FILE_ENV, RUN_ID_ENV, failure_path


class PreemptionNotice:
    def __init__(self, stop_request: Optional[Path] = None):
        """`stop_request`: the run's stop-request file (`spottrain_contract.job.stop_request_path`)."""
        self.received = False
        self.stop_request = stop_request
        self.store_request = None  # (store, key) of a platform run's stop request (`asked_in_store`)
        signal.signal(signal.SIGTERM, self._handle)

    def asked_in_store(self, store, key: str) -> None:
        """A platform's run is stopped through its platform (`launch stop`, the hub's Stop): the launcher leaves the
        request in the run's store first (`layout.STOP_REQUESTED`), read here when a SIGTERM came."""
        self.store_request = (store, key)

    def _handle(self, signum, frame) -> None:
        self.received = True

    @property
    def stopped(self) -> bool:
        """The SIGTERM was a person's stop, not a spot notice: asked for where the supervisor (a run here) or the
        launcher (a platform's run, in its store) says so. A store that cannot be read says nothing: preempted."""
        if not self.received:
            return False
        if self.stop_request is not None and self.stop_request.exists():
            return True
        if self.store_request is None:
            return False
        store, key = self.store_request
        try:
            return store.get_bytes(key) is not None
        except Exception:  # out of reach while the VM goes away: counted as the preemption it may well be
            return False


def report_exit_code(code: int) -> None:
    """torchrun reports any failed worker as exit 1; the run script and the local supervisor read this file."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path:
        with open(path, "w") as out:
            out.write(str(code))


def record_failure(local_dir: str | Path, reason: str, rank: Optional[int] = None) -> bool:
    """Why this job ended, for the supervisor and `launch`: the first failing rank's error, one line, in the failure
    file of the run named by $SPOTTRAIN_RUN_ID under `local_dir` (the recipe's checkpoint.local_dir). True for
    that first rank (the others only add to the log), and where no launch named the run (nobody reads the file).
    `rank`: the rank that failed, where another process tells (a command script's wrapper); default this one's."""
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        return True
    path = failure_path(local_dir, run_id)
    rank = os.environ.get("RANK", "0") if rank is None else rank
    line = f"[rank {rank}] {reason.splitlines()[0] if reason else 'failed'}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as out:  # exclusive: the first rank to fail writes it
            out.write(line + "\n")
        return True
    except FileExistsError:
        return False


class Failure(NamedTuple):
    code: Optional[int]  # None: a bug or a crash, which the caller raises again
    message: str
    first: bool  # this process recorded the run's first failure


def failed_attempt(exc: Exception, local_dir: str | Path) -> Failure:
    """How an attempt that raised `exc` ends (the trainer's and a command script's wrapper alike), its one line
    recorded in the failure file: exit code 1 where a restart may heal it (the store out of reach), the
    do-not-restart code for bad settings or a store that refuses, none for a bug (recorded with its type)."""
    from spottrain_contract.errors import ConfigurationError
    from spottrain_contract.store import StoreUnavailable, is_permanent, store_failure

    healable = isinstance(exc, StoreUnavailable)
    known = healable or isinstance(exc, ConfigurationError) or is_permanent(exc)
    message = store_failure(exc) if is_permanent(exc) and not isinstance(exc, ConfigurationError) else str(exc)
    first = record_failure(local_dir, message if known else f"{type(exc).__name__}: {message}")
    code = (1 if healable else DO_NOT_RESTART_EXIT_CODE) if known else None
    return Failure(code, message, first)

