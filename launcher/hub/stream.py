"""Server-sent events: a run's state and new log lines as they come, and the list of runs as it changes.

The browser's EventSource reconnects by itself (`retry:`); a run's stream ends with an `end` event once the run
is over and its log is read to the end. What a run's poll finds (its view, new metrics, new masked log lines) is
the operations' `RunWatch`; this module only paces the polls and writes the events.
"""

from __future__ import annotations

import json
import time
from typing import Iterator

from launcher import operations as ops

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HEARTBEAT_SECONDS = 15.0


def _event(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def run_events(watch: ops.RunWatch, poll_seconds: float = 1.0) -> Iterator[str]:
    """`run` (the run's view) when it changes, `metrics` when new metric values were logged, `log` with new log
    lines, `end` once the run is over."""
    yield f"retry: {int(poll_seconds * 2000)}\n\n"
    last, quiet_since = None, time.monotonic()
    while True:
        poll = watch.poll()
        if poll.view != last:
            yield _event("run", poll.view)
            last, quiet_since = poll.view, time.monotonic()
        if poll.metrics_changed:
            yield _event("metrics", {})
        if poll.lines:
            yield _event("log", {"lines": poll.lines})
            quiet_since = time.monotonic()
        if poll.over:
            yield _event("end", {"state": poll.view["state"]})
            return
        if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        time.sleep(poll_seconds)


def list_events(ws: ops.Workspace, poll_seconds: float = 2.0, offset: int = 0) -> Iterator[str]:
    """The Runs page's window of runs (the newest after `offset`) whenever it changes: a `sweeps` event (each
    sweep's summary by its id), then `runs`."""
    yield f"retry: {int(poll_seconds * 1000)}\n\n"
    last, quiet_since = None, time.monotonic()
    while True:
        listed = ops.listing(ws, offset=offset)
        views = [view.model_dump(mode="json") for view in listed.views]
        if views != last:
            yield _event("sweeps", listed.sweeps)
            yield _event("runs", views)
            last, quiet_since = views, time.monotonic()
        elif time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        time.sleep(poll_seconds * 2)
