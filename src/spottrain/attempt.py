"""This attempt's entry in the run's preemption ledger (`spottrain_contract.ledger`), kept by rank 0.

Started once the attempt has restored its checkpoint, beaten as it trains (the last finished step, on a
background thread, a beat skipped while the previous one is still being written, so a slow store never holds the
loop), and ended with how the attempt ended, whatever ends it. A kill leaves the last beat: the next attempt's
entry tells what was lost. Every method is a no-op on other ranks and before `start`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

from spottrain_contract.ledger import Attempt, Ledger, ledger_of, prefix, read_attempts
from spottrain_contract.store import CheckpointStore, with_retries

log = logging.getLogger(__name__)


def ledger_metrics(ledger: Optional[Ledger]) -> dict[str, float]:
    """The ledger's totals as `ledger/*` metrics (`launch compare` shows them beside the training metrics)."""
    return {f"ledger/{name}": float(value) for name, value in ledger.totals().items()} if ledger else {}


class AttemptRecorder:
    def __init__(self):
        self.store: Optional[CheckpointStore] = None
        self.attempt: Optional[Attempt] = None
        self.earlier: list[Attempt] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._beating: Optional[Future] = None
        self._warned = False

    def start(self, store: CheckpointStore, run_id: str, *, started: float, start_step: int, world_size: int,
              device: str, gpus: int) -> None:
        self.store, self.run_id = store, run_id
        self.earlier = with_retries(lambda: read_attempts(store, run_id), what=f"read {prefix(run_id)}")
        number = self.earlier[-1].number + 1 if self.earlier else 1
        self.attempt = Attempt(number=number, started=started, start_step=start_step, world_size=world_size,
                               device=device, gpus=gpus, last_step=start_step, last_seen=time.time())
        self._write()

    def beat(self, step: int, startup_seconds: Optional[float] = None) -> None:
        if self.attempt is None:
            return
        with self._lock:
            self.attempt.last_step, self.attempt.last_seen = step, time.time()
            if startup_seconds is not None:
                self.attempt.startup_seconds = startup_seconds
        if self._beating is None or self._beating.done():
            self._beating = self._pool.submit(self._write_quietly)

    def end(self, cause: str, step: Optional[int] = None) -> Optional[Ledger]:
        """Close the entry (written before this returns; the last beat's step unless `step` is given); the run's
        ledger with it. Once only: a later call (an error while finishing) changes nothing."""
        if self.attempt is None or self.attempt.ended is not None:
            return None
        with self._lock:
            self.attempt.last_step = self.attempt.last_step if step is None else step
            self.attempt.cause = cause
            self.attempt.last_seen = self.attempt.ended = time.time()
        self._pool.shutdown(wait=True)
        self._write_quietly()
        return self.ledger()

    def ledger(self) -> Ledger:
        with self._lock:
            return ledger_of([*self.earlier, self.attempt])

    def _write(self) -> None:
        with self._lock:
            data, key = self.attempt.to_json(), prefix(self.run_id) + self.attempt.key_name
        with_retries(lambda: self.store.put_bytes(data, key), what=f"write {key}")

    def _write_quietly(self) -> None:
        try:
            self._write()
        except Exception as exc:  # the checkpoints report a failing store; a missed write only blurs the ledger
            if not self._warned:  # once: the checkpoints' own error is the line that matters
                log.warning("ledger entry not written: %s", exc)
                self._warned = True
