"""Server-sent events: a run's state and new log lines as they come, and the list of runs as it changes.

The browser's EventSource reconnects by itself (`retry:`); a run's stream ends with an `end` event once the run
is over and its log is read to the end. Log lines come only from the run's own log (its record's `log`), less
third-party noise as `launch logs` shows it, with any piece of a secret value known here masked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator, Optional

from launcher.console import for_console
from launcher.registry import Registry, RunRecord
from launcher.secrets import mask_text, resolve_secrets
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
TAIL_BYTES = 64 * 1024  # a new stream starts with the end of the log, not all of it
HEARTBEAT_SECONDS = 15.0


def _event(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def secret_values(record: RunRecord) -> list[str]:
    """The values of the secrets the run's recipe names, as found here (environment, .env)."""
    if not record.recipe_document:
        return []
    names = from_shipped(record.recipe_document, record.run_id).recipe.secrets
    return [v for v in resolve_secrets(names, Path(record.project), required=False).as_dict().values() if v]


def masked_lines(lines: list[str], secrets: list[str]) -> list[str]:
    return [mask_text(line, secrets) for line in for_console(lines)]


class LogTail:
    """New whole lines of a log file since the last read (the first read: its last TAIL_BYTES)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.offset = None
        self.partial = ""

    def read(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if self.offset is None:
            self.offset = max(0, size - TAIL_BYTES)
        if size <= self.offset:
            return []
        with self.path.open("rb") as source:
            source.seek(self.offset)
            chunk = source.read(size - self.offset)
        self.offset += len(chunk)
        text = self.partial + chunk.decode("utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        self.partial = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        return lines

    def rest(self) -> list[str]:
        lines, self.partial = [*self.read(), *([self.partial] if self.partial else [])], ""
        return lines


class LatestMetrics:
    """The latest value of each metric of the run's MLflow run (system metrics aside), read each poll: the page
    refetches its curves when they change. The step alone would make a point wait for the next step, since the
    trainer reports a step before that step's metrics reach MLflow (they are batched)."""

    def __init__(self):
        self.client, self.mlflow_run_id = None, None

    def read(self, record: RunRecord) -> Optional[tuple]:
        """None while the run has no MLflow run or its store is out of reach."""
        from launcher.hub.runs import mlflow_client_and_run

        try:
            if self.mlflow_run_id is None:
                self.client, run = mlflow_client_and_run(record)
                if run is None:
                    return None
                self.mlflow_run_id = run.info.run_id
            else:
                run = self.client.get_run(self.mlflow_run_id)
        except Exception:  # MLflow out of reach: the step and state still stream
            return None
        return tuple(sorted((key, repr(value)) for key, value in run.data.metrics.items()
                            if not key.startswith("system/")))


def run_events(registry: Registry, run_id: str, poll_seconds: float = 1.0) -> Iterator[str]:
    """`run` (the run's view) when it changes, `metrics` when new metric values were logged, `log` with new log
    lines, `end` once the run is over."""
    from launcher.hub.runs import hub_view

    yield f"retry: {int(poll_seconds * 2000)}\n\n"
    record = registry.get(run_id)
    tail = LogTail(record.log) if record.log else None
    secrets = secret_values(record)
    last, quiet_since = None, time.monotonic()
    latest, shown_metrics, first_poll = LatestMetrics(), None, True
    while True:
        record = registry.get(run_id)
        view = hub_view(registry, record).model_dump(mode="json")
        metrics = latest.read(record) if record.state is not RunState.DRAFT else None
        new_metrics = metrics is not None and metrics != shown_metrics and not first_poll  # the page drew those
        shown_metrics, first_poll = metrics if metrics is not None else shown_metrics, False
        if view != last:
            yield _event("run", view)
            last, quiet_since = view, time.monotonic()
        if new_metrics:
            yield _event("metrics", {})
        if tail is None and record.log:  # a draft that was launched meanwhile
            tail, secrets = LogTail(record.log), secret_values(record)
        over = RunState(view["state"]).is_terminal
        lines = (tail.rest() if over else tail.read()) if tail else []
        if lines:
            yield _event("log", {"lines": masked_lines(lines, secrets)})
            quiet_since = time.monotonic()
        if over:
            yield _event("end", {"state": view["state"]})
            return
        if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        time.sleep(poll_seconds)


def list_events(registry: Registry, poll_seconds: float = 2.0, offset: int = 0) -> Iterator[str]:
    """The Runs page's window of runs (the newest after `offset`) whenever it changes: a `sweeps` event (each
    sweep's summary by its id), then `runs`."""
    from launcher.hub.runs import listing

    yield f"retry: {int(poll_seconds * 1000)}\n\n"
    last, quiet_since = None, time.monotonic()
    while True:
        views, sweeps = listing(registry, offset=offset)
        if views != last:
            yield _event("sweeps", sweeps)
            yield _event("runs", views)
            last, quiet_since = views, time.monotonic()
        elif time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        time.sleep(poll_seconds * 2)
