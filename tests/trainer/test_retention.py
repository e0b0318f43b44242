"""Retention over random histories of saves, bests, finals, crashed uploads and prunes (the store is a set)."""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from spottrain.checkpoint.retention import checkpoints_to_delete


class RetentionHistory(RuleBasedStateMachine):
    """The store holds step directories; a step is complete once its manifest landed. Retention only ever
    sees the complete ones, as Checkpointer.complete_steps() lists them."""

    @initialize(keep=st.integers(min_value=1, max_value=4))
    def start(self, keep: int):
        self.keep = keep
        self.stored: set[int] = set()     # step directories with any file in the store
        self.complete: set[int] = set()   # ... whose manifest landed
        self.best: Optional[int] = None
        self.finals: set[int] = set()
        self.last_step = 0
        self.newest_completed: Optional[int] = None

    def _completed(self, step: int):
        self.complete.add(step)
        self.newest_completed = max(step, self.newest_completed or step)

    def _new_step(self, gap: int) -> int:
        self.last_step += gap
        self.stored.add(self.last_step)
        return self.last_step

    @property
    def in_flight(self) -> set[int]:
        return self.stored - self.complete

    @rule(gap=st.integers(min_value=1, max_value=3))
    def save_intermediate(self, gap: int):
        self._completed(self._new_step(gap))

    @rule(gap=st.integers(min_value=1, max_value=3))
    def save_final(self, gap: int):
        step = self._new_step(gap)
        self._completed(step)
        self.finals.add(step)

    @rule(gap=st.integers(min_value=1, max_value=3))
    def crash_during_upload(self, gap: int):
        self._new_step(gap)  # files arrive, the manifest never does

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def resumed_job_completes_an_in_flight_step(self, data):
        self._completed(data.draw(st.sampled_from(sorted(self.in_flight))))

    @precondition(lambda self: self.complete)
    @rule(data=st.data())
    def mark_best(self, data):
        self.best = data.draw(st.sampled_from(sorted(self.complete)))

    @rule()
    def apply_retention(self):
        before = set(self.complete)
        doomed = checkpoints_to_delete(before, keep=self.keep, best=self.best, final=self.finals)

        assert len(doomed) == len(set(doomed))
        assert set(doomed) <= before  # never an in-flight step, never anything unknown
        if before:
            assert max(before) not in doomed
        assert self.best not in doomed
        assert not self.finals & set(doomed)
        intermediates = sorted(before - self.finals - {self.best})
        assert sorted(before - set(doomed) - self.finals - {self.best}) == intermediates[-self.keep:]

        self.complete -= set(doomed)
        self.stored -= set(doomed)
        assert checkpoints_to_delete(self.complete, keep=self.keep, best=self.best, final=self.finals) == []

    @invariant()
    def best_and_finals_are_still_complete(self):
        assert self.best is None or self.best in self.complete
        assert self.finals <= self.complete

    @invariant()
    def the_newest_step_ever_completed_is_still_complete(self):
        assert self.newest_completed is None or self.newest_completed in self.complete

    @invariant()
    def in_flight_steps_stay_in_the_store(self):
        assert self.in_flight <= self.stored


RetentionHistory.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_retention_over_random_histories = RetentionHistory.TestCase


@given(complete=st.sets(st.integers(min_value=1, max_value=60), max_size=25), keep=st.integers(1, 5),
       data=st.data())
@settings(max_examples=300, deadline=None)
def test_kept_intermediates_are_exactly_the_newest_keep(complete, keep, data):
    best = data.draw(st.none() | st.sampled_from(sorted(complete))) if complete else None
    finals = data.draw(st.sets(st.sampled_from(sorted(complete)), max_size=2)) if complete else set()

    doomed = set(checkpoints_to_delete(complete, keep=keep, best=best, final=finals))

    intermediates = sorted(complete - finals - {best})
    assert sorted(complete - doomed - finals - {best}) == intermediates[-keep:]


def test_nothing_is_deleted_from_an_empty_store():
    assert checkpoints_to_delete([], keep=1, best=None, final=()) == []


def test_best_and_final_do_not_count_against_keep():
    assert checkpoints_to_delete([1, 2, 3, 4, 5, 6], keep=2, best=1, final=[6]) == [2, 3]
