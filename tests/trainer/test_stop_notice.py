"""SIGTERM reaches the trainer for a spot notice and for a person's stop alike: the stop-request file the local
supervisor writes before passing the signal on tells them apart."""

from __future__ import annotations

import os
import signal
import time

from spottrain.preemption import PreemptionNotice
from spottrain_contract.job import stop_request_path


def test_a_sigterm_is_a_stop_when_a_stop_was_requested_else_a_spot_notice(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        marker = stop_request_path(tmp_path, "run")
        notice = PreemptionNotice(marker)
        assert (notice.received, notice.stopped) == (False, False)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not notice.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (notice.received, notice.stopped) == (True, False)  # nobody asked: the spot VM is going away
        marker.parent.mkdir(parents=True)
        marker.touch()
        assert notice.stopped
        assert not PreemptionNotice(None).stopped  # no contract file to look at (a node set up by hand)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_platform_runs_stop_is_read_from_its_store_and_an_unreadable_store_says_preempted(tmp_path):
    from spottrain.preemption import PreemptionNotice
    from spottrain_contract.store import open_store

    store = open_store(str(tmp_path / "store"))
    notice = PreemptionNotice(tmp_path / "local" / ".stop-requested")
    notice.asked_in_store(store, "run/stop-requested")
    notice.received = True  # the platform's SIGTERM
    assert not notice.stopped
    store.put_bytes(b"stop requested\n", "run/stop-requested")
    assert notice.stopped

    class Unreachable:
        def get_bytes(self, key):
            raise ConnectionError("the VM is going away")

    notice.asked_in_store(Unreachable(), "run/stop-requested")
    assert not notice.stopped
