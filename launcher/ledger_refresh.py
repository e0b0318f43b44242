"""Goodput and device-hours in the hub's run list, kept fresh without the page waiting on a store.

Each run's ledger summary is cached in its row (`Registry.cache_ledger`). Reading a ledger is a few requests to the
run's store, which may be slow or out of reach from the hub: the hub reads it in the background, on a few daemon
threads, at most once per run for each step the run reports while it is live and once after it has ended; the list
shows the cache as it is meanwhile (the next refresh shows what the read found). A failed read leaves the cache as
it was.
"""

from __future__ import annotations

import queue
import threading

from launcher.registry import Registry, RunRecord
from spottrain_contract.job import RunState

WORKERS = 2
ENDED = "ended"  # what `_asked` holds for a run whose ledger was asked for after it ended

_queue: "queue.Queue[tuple[Registry, RunRecord]]" = queue.Queue()
_lock = threading.Lock()
# (the hub's project, run id) → the step (or ENDED) its ledger was last asked for at; a process may serve several
_asked: dict[tuple[str, str], str] = {}
_reading: set[tuple[str, str]] = set()  # runs whose read is queued or under way
_workers: list[threading.Thread] = []


def refresh_soon(registry: Registry, record: RunRecord, state: RunState, step: str) -> None:
    """Ask for the run's ledger to be read (not now: on a worker) unless it was asked for at this step, or after
    the run ended (by this process, or by anyone since the run's `ended`); a draft has none."""
    if record.state is RunState.DRAFT or not record.store:
        return
    ended = state.is_terminal
    if ended and record.ledger and record.ended and record.ledger.read >= record.ended:
        return
    key, mark = (registry.project_key, record.run_id), ENDED if ended else step
    with _lock:
        if _asked.get(key) == mark or key in _reading:
            return
        _asked[key] = mark
        _reading.add(key)
        while len(_workers) < WORKERS:
            _workers.append(threading.Thread(target=_work, name="hub-ledger", daemon=True))
            _workers[-1].start()
    _queue.put((registry, record))


def _work() -> None:
    from launcher.views import ledger as ledger_view

    while True:
        registry, record = _queue.get()
        try:
            ledger_view.run_ledger(registry, record)
        except Exception:  # the store out of reach, no credentials for it here: the cache stays as it was
            pass
        finally:
            with _lock:
                _reading.discard((registry.project_key, record.run_id))
            _queue.task_done()


def wait() -> None:
    """Until every read asked for so far is done (tests)."""
    _queue.join()
