"""The preemption ledger's arithmetic: causes, recomputed steps, goodput and hours from the attempts' entries."""

from __future__ import annotations

import pytest

from spottrain_contract.ledger import (FAILED, FINISHED, KILLED, PREEMPTED, RUNNING, Attempt, ledger_of,
                                       read_ledger)
from spottrain_contract.store import open_store


def attempt(number, start_step, last_step, started, seconds, cause=RUNNING, startup=10.0, world=2):
    ended = started + seconds if cause != RUNNING else None
    return Attempt(number=number, started=started, start_step=start_step, world_size=world, device="NVIDIA A100",
                   gpus=world, last_step=last_step, last_seen=started + seconds, ended=ended, cause=cause,
                   startup_seconds=startup)


ATTEMPTS = [
    attempt(1, 0, 40, 0.0, 110.0),  # vanished at step 40 (its last beat): killed
    attempt(2, 30, 60, 200.0, 70.0, PREEMPTED),  # resumed from 30: 10 recomputed
    attempt(3, 60, 75, 300.0, 40.0, FAILED),  # a crash after its checkpoint at 70: 5 recomputed
    attempt(4, 70, 100, 400.0, 70.0, FINISHED),
]


def test_causes_recomputed_steps_and_goodput():
    ledger = ledger_of(ATTEMPTS)
    assert [v.cause for v in ledger.attempts] == [KILLED, PREEMPTED, FAILED, FINISHED]
    assert [v.recomputed for v in ledger.attempts] == [10, 0, 5, 0]
    assert (ledger.useful, ledger.computed, ledger.recomputed) == (100, 115, 15)
    assert ledger.computed == ledger.useful + ledger.recomputed
    assert ledger.goodput == pytest.approx(100 / 115)
    totals = ledger.totals()
    assert (totals["attempts"], totals["preemptions"]) == (4, 2)  # the notice and the kill; not the crash


def test_hours_used_and_lost():
    ledger = ledger_of(ATTEMPTS)
    assert ledger.device_hours == pytest.approx((110 + 70 + 40 + 70) * 2 / 3600)
    # lost: 10 steps of attempt 1 at (110 − 10) / 40 s, 5 of attempt 3 at (40 − 10) / 15 s, three restarts' 10 s
    lost_seconds = 10 * 100 / 40 + 5 * 30 / 15 + 3 * 10
    assert ledger.device_hours_lost == pytest.approx(lost_seconds * 2 / 3600)


def test_the_last_attempt_still_training_is_running_not_killed():
    ledger = ledger_of(ATTEMPTS[:1])
    assert [v.cause for v in ledger.attempts] == [RUNNING] and ledger.recomputed == 0
    assert ledger_of([]).goodput == 1.0


def test_the_last_attempt_left_open_in_a_run_that_ended_was_killed():
    """A kill, then a stop before the restart: the run is over and its last attempt never said how it ended."""
    ledger = ledger_of([ATTEMPTS[0]], run_ended=True)
    assert [v.cause for v in ledger.attempts] == [KILLED] and ledger.recomputed == 0
    assert ledger.totals()["preemptions"] == 1 and ledger.useful == 40
    ended = ledger_of(ATTEMPTS, run_ended=True)  # an attempt that said how it ended keeps its word
    assert [v.cause for v in ended.attempts] == [KILLED, PREEMPTED, FAILED, FINISHED]


def test_entries_round_trip_through_the_store_in_attempt_order(tmp_path):
    store = open_store(str(tmp_path))
    for entry in reversed(ATTEMPTS):
        store.put_bytes(entry.to_json(), f"run/ledger/{entry.key_name}")
    store.put_bytes(b"{}", "run/step-00000070/MANIFEST.json")  # not the ledger's
    assert [v.attempt for v in read_ledger(store, "run").attempts] == ATTEMPTS


def test_a_person_s_stop_is_its_own_cause_not_a_preemption_and_its_steps_still_count():
    from spottrain_contract.ledger import STOPPED

    ledger = ledger_of([attempt(1, 0, 40, 0.0, 110.0, STOPPED),  # stopped: checkpointed step 40 and exited
                        attempt(2, 40, 100, 1000.0, 70.0, FINISHED)])  # resumed later from 40: nothing recomputed
    assert [v.cause for v in ledger.attempts] == [STOPPED, FINISHED]
    assert (ledger.useful, ledger.computed, ledger.recomputed, ledger.goodput) == (100, 100, 0, 1.0)
    totals = ledger.totals()
    assert (totals["attempts"], totals["preemptions"], totals["stopped"]) == (2, 0, 1)
    assert ledger.device_hours == pytest.approx((110 + 70) * 2 / 3600)
    assert ledger.device_hours_lost == 0  # the start-up after a stop is the person's choice, not preemption's cost
    # a stopped attempt whose checkpoint did not cover its last steps: those are recomputed all the same
    partial = ledger_of([attempt(1, 0, 40, 0.0, 110.0, STOPPED), attempt(2, 30, 100, 1000.0, 70.0, FINISHED)])
    assert (partial.recomputed, partial.goodput) == (10, pytest.approx(100 / 110))
