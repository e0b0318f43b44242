"""Runs logged elsewhere: MLflow runs that some other script logged into a recipe's experiment (they lack the
`spottrain.run_id` tag every run of ours carries), listed read-only. The hub reads them through MLflow's own API,
from the server the project's recipes log to, and never starts, stops or changes them.

The server: `launch hub --mlflow URI`, else the one a platform run of each recipe logs to (`runner.server_uri`:
`mlflow.tracking_uri`, or MLFLOW_TRACKING_URI in its `env`), else MLFLOW_TRACKING_URI from the environment or
`.env` (where the team's server is given as a secret, and where a run here logs then too). The experiments: every
recipe's `mlflow.experiment`. With no server the list is empty and says nothing: runs here without one log each
to their own SQLite store, which no other script writes to.

The list is one search per server (its newest MAX_LISTED runs), kept a few seconds so that each open Runs page
refreshing does not ask the server again; a server out of reach (or refusing) makes an empty list with a one-line
warning, within seconds (short timeout, no retries). One run is shown only when its id is an MLflow run id and the
run is in a watched experiment without our tags: the hub is no proxy to any other MLflow run.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

from pydantic import BaseModel, Field

from launcher import runner
from launcher.sweeps.ablation import TRAIN_LOSS
from launcher.errors import LaunchError, RunNotFound
from launcher.mlflow_runs import histories
from launcher.mlflow_server import one_line, server_client
from launcher.secrets import resolve_secrets
from spottrain_contract.errors import UserError
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, MLFLOW_SWEEP_ID_TAG, RunState
from spottrain_contract.recipe import load_recipe, recipe_names

MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow makes its run ids of (uuid4 hex)
MAX_LISTED = 500  # the newest runs of each server
LIST_SECONDS = 5.0  # how long a list is served again before the server is asked anew
DOWN_SECONDS = 30.0  # the same for a list that found a server out of reach
TIMEOUT_SECONDS = 5  # one request to a server; no retries
OUR_TAGS = (MLFLOW_RUN_ID_TAG, MLFLOW_SWEEP_ID_TAG)  # our training runs, and the parent runs of our sweeps
NOT_OURS = " and ".join(f"tags.`{tag}` IS NULL" for tag in OUR_TAGS)
STATES = {"RUNNING": RunState.RUNNING, "FINISHED": RunState.FINISHED, "FAILED": RunState.FAILED,
          "KILLED": RunState.STOPPED, "SCHEDULED": RunState.PENDING}

T = TypeVar("T")


class Unreachable(LaunchError):
    """The MLflow server did not answer, or refused (the API answers 503)."""

    status = 503


class ExternalRunView(BaseModel):
    """An MLflow run logged elsewhere, as the Runs page lists it."""

    id: str = Field(description="`mlflow:<MLflow run id>`: never the id of a run of ours.")
    mlflow_run_id: str
    name: str
    experiment: str
    recipe: str = Field(description="The recipe whose experiment it is (several, comma-separated, where they "
                                    "share it).")
    state: RunState = Field(description="MLflow's status as a run state (KILLED: stopped, SCHEDULED: pending).")
    step: Optional[int] = Field(None, description="The latest step of train/loss, else of any metric.")
    loss: Optional[float] = Field(None, description="The latest train/loss, if it logs one.")
    started: Optional[float] = Field(None, description="Seconds since the epoch.")
    user: Optional[str] = Field(None, description="Who logged it (MLflow's mlflow.user tag).")
    read_only: bool = True


class ExternalRunDetail(ExternalRunView):
    """An MLflow run logged elsewhere, as its read-only page shows it."""

    source: Optional[str] = Field(None, description="The script that logged it (MLflow's mlflow.source.name).")
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict, description="Each metric's latest value (system "
                                                                       "metrics left out).")


class ExternalRunsView(BaseModel):
    runs: list[ExternalRunView] = Field(description="Newest first.")
    warning: Optional[str] = Field(None, description="Why some server's runs are missing, in one line.")


@dataclass(frozen=True)
class Watched:
    """One MLflow server and the experiments on it the hub lists."""

    uri: str
    experiments: dict[str, str]  # experiment name → the recipe(s) logging there


def watched(project_dir: Path, mlflow_uri: Optional[str] = None) -> list[Watched]:
    """Each server and its experiments, as the module's docstring says; a recipe that does not load is left out
    (it has no experiment yet: launching it says what is wrong)."""
    fallback = resolve_secrets(["MLFLOW_TRACKING_URI"], project_dir, required=False).as_dict()
    servers: dict[str, dict[str, list[str]]] = {}
    for name in recipe_names(project_dir):
        try:
            recipe = load_recipe(name, project_dir=project_dir).recipe
        except UserError:
            continue
        uri = mlflow_uri or runner.server_uri(recipe) or fallback.get("MLFLOW_TRACKING_URI")
        if uri:
            servers.setdefault(uri, {}).setdefault(recipe.mlflow.experiment, []).append(name)
    return [Watched(uri, {experiment: ", ".join(names) for experiment, names in experiments.items()})
            for uri, experiments in servers.items()]


class ExternalRuns:
    """What one hub knows of the runs logged elsewhere (`app.state.external`); the list is kept briefly."""

    def __init__(self, project_dir: Path, mlflow_uri: Optional[str] = None):
        self.project_dir, self.mlflow_uri = project_dir, mlflow_uri
        self._lock = threading.Lock()  # one refresh at a time; the others get its list
        self._listed: Optional[ExternalRunsView] = None
        self._until = 0.0

    def listing(self) -> ExternalRunsView:
        with self._lock:
            if self._listed is None or time.monotonic() >= self._until:
                self._listed = self._list()
                self._until = time.monotonic() + (DOWN_SECONDS if self._listed.warning else LIST_SECONDS)
            return self._listed

    def detail(self, mlflow_run_id: str) -> ExternalRunDetail:
        def read(client, run, experiment: str, recipe: str) -> ExternalRunDetail:
            metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith("system/")}
            return ExternalRunDetail(**_view(run, experiment, recipe), source=run.data.tags.get("mlflow.source.name"),
                                     params=run.data.params, metrics=dict(sorted(metrics.items())))

        return self._read(mlflow_run_id, read)

    def histories(self, mlflow_run_id: str) -> dict[str, list[list[float]]]:
        return self._read(mlflow_run_id, lambda client, run, experiment, recipe: histories(client, run))

    def _list(self) -> ExternalRunsView:
        from mlflow.exceptions import MlflowException

        listed, warnings = [], []
        for server in watched(self.project_dir, self.mlflow_uri):
            try:
                listed += self._search(server)
            except MlflowException as exc:  # the transport's failures too, as MlflowClient wraps them
                warnings.append(f"MLflow at {server.uri} could not be read ({one_line(exc)}): its runs are not listed")
        listed.sort(key=lambda run: run["started"] or 0, reverse=True)
        return ExternalRunsView(runs=listed, warning="; ".join(warnings) or None)

    def _search(self, server: Watched) -> list[dict]:
        with self._client(server) as client:
            names = {}
            for experiment in server.experiments:
                found = client.get_experiment_by_name(experiment)
                if found is not None:
                    names[found.experiment_id] = experiment
            found = _not_ours(client, list(names)) if names else []
        return [_view(run, names[run.info.experiment_id], server.experiments[names[run.info.experiment_id]])
                for run in found]

    def _read(self, mlflow_run_id: str, read: Callable[..., T]) -> T:
        """`read(client, run, experiment, recipe)` of the run, found on a watched server in a watched experiment
        and not ours; else NotFound (Unreachable when a server that might have it did not answer)."""
        from mlflow.exceptions import MlflowException

        if not MLFLOW_RUN_ID.fullmatch(mlflow_run_id):
            raise RunNotFound(f"'{mlflow_run_id[:64]}' is not an MLflow run id (32 hex digits)")
        failed = None
        for server in watched(self.project_dir, self.mlflow_uri):
            with self._client(server) as client:
                try:
                    run = client.get_run(mlflow_run_id)
                    experiment = client.get_experiment(run.info.experiment_id).name
                    if experiment in server.experiments and not _ours(run) and run.info.lifecycle_stage == "active":
                        return read(client, run, experiment, server.experiments[experiment])
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        failed = f"MLflow at {server.uri} could not be read ({one_line(exc)})"
        if failed:
            raise Unreachable(failed)
        raise RunNotFound(f"no MLflow run {mlflow_run_id} logged elsewhere into an experiment of this project's "
                          f"recipes")

    def _client(self, server: Watched):
        return server_client(server.uri, self.project_dir, timeout=TIMEOUT_SECONDS, retries=0)


def _not_ours(client, experiment_ids: list[str]) -> list:
    """The newest runs of the experiments without our tags. A server older than `IS NULL` in filters refuses the
    filter: then its newest runs, ours left out here."""
    from mlflow.exceptions import MlflowException

    newest = {"max_results": MAX_LISTED, "order_by": ["attributes.start_time DESC"]}
    try:
        return client.search_runs(experiment_ids, filter_string=NOT_OURS, **newest)
    except MlflowException as exc:
        if exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
    return [run for run in client.search_runs(experiment_ids, **newest) if not _ours(run)]


def _ours(run) -> bool:
    return any(tag in run.data.tags for tag in OUR_TAGS)


def _view(run, experiment: str, recipe: str) -> dict:
    info, data = run.info, run.data
    steps = {m.key: m.step for m in data.to_proto().metrics if not m.key.startswith("system/")}
    return {"id": f"mlflow:{info.run_id}", "mlflow_run_id": info.run_id, "name": info.run_name or info.run_id,
            "experiment": experiment, "recipe": recipe, "state": STATES.get(info.status, RunState.UNKNOWN),
            "step": steps.get(TRAIN_LOSS, max(steps.values(), default=None)), "loss": data.metrics.get(TRAIN_LOSS),
            "started": info.start_time / 1000 if info.start_time else None,
            "user": data.tags.get("mlflow.user") or info.user_id or None}
