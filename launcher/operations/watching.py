"""Watching one run as it goes, for the hub's run stream: each poll says whether its view changed, whether new
metric values reached MLflow, and which new log lines were written (less third-party noise, every piece of a
secret value known here masked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.views.console import for_console
from launcher.mlflow_runs import mlflow_run
from launcher.operations.runs import hub_view
from launcher.operations.workspace import Workspace
from launcher.registry import RunRecord
from launcher.secrets import mask_text, resolve_secrets
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped

TAIL_BYTES = 64 * 1024  # a new watch starts with the end of the log, not all of it


@dataclass(frozen=True)
class Poll:
    view: dict  # the run's HubRunView as JSON
    metrics_changed: bool  # new metric values were logged since the last poll
    lines: list[str]  # new log lines, masked
    over: bool  # the run has ended and its log was read to the end


class RunWatch:
    def __init__(self, ws: Workspace, run_id: str):
        self.ws, self.run_id = ws, run_id
        record = ws.registry.get(run_id)
        self.tail = LogTail(record.log) if record.log else None
        self.secrets = secret_values(record)
        self.metrics, self.shown, self.first = LatestMetrics(), None, True

    def poll(self) -> Poll:
        record = self.ws.registry.get(self.run_id)
        view = hub_view(self.ws, record).model_dump(mode="json")
        latest = self.metrics.read(record) if record.state is not RunState.DRAFT else None
        changed = latest is not None and latest != self.shown and not self.first  # the page drew those
        self.shown, self.first = latest if latest is not None else self.shown, False
        if self.tail is None and record.log:  # a draft that was launched meanwhile
            self.tail, self.secrets = LogTail(record.log), secret_values(record)
        over = RunState(view["state"]).is_terminal
        lines = (self.tail.rest() if over else self.tail.read()) if self.tail else []
        return Poll(view, changed, [mask_text(line, self.secrets) for line in for_console(lines)], over)


def secret_values(record: RunRecord) -> list[str]:
    """The values of the secrets the run's recipe names, as found here (environment, .env)."""
    if not record.recipe_document:
        return []
    names = from_shipped(record.recipe_document, record.run_id).recipe.secrets
    return [v for v in resolve_secrets(names, Path(record.project), required=False).as_dict().values() if v]


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
        try:
            if self.mlflow_run_id is None:
                self.client, run = mlflow_run(record)
                if run is None:
                    return None
                self.mlflow_run_id = run.info.run_id
            else:
                run = self.client.get_run(self.mlflow_run_id)
        except Exception:  # MLflow out of reach: the step and state still stream
            return None
        return tuple(sorted((key, repr(value)) for key, value in run.data.metrics.items()
                            if not key.startswith("system/")))
