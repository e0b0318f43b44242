"""A sweep in MLflow: one parent run in the recipe's experiment, made by the launcher and tagged with the sweep id,
and each cell's run its child. The parent's MLflow run id reaches every cell's job in its environment
(`job.MLFLOW_PARENT_RUN_ENV`); the trainer tags its run `mlflow.parentRunId` with it, so MLflow's UI nests the
cells under the sweep. A relaunch finds the parent again by its tag.

The launcher must reach the MLflow the cells log to: the SQLite store beside the checkpoints for runs here, the
recipe's server for a platform's (credentials MLFLOW_TRACKING_USERNAME/PASSWORD from the environment or `.env`,
as the job gets them). A platform's cells without a server log on their nodes: no parent then, and the launch
says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher import runner
from launcher.errors import LaunchError
from launcher.mlflow_server import one_line, server_client
from spottrain_contract.job import MLFLOW_PARENT_RUN_ENV, MLFLOW_SWEEP_ID_TAG, mlflow_experiment_id

NO_SERVER = ("mlflow     no parent run: the recipe names no MLflow server (mlflow.tracking_uri), so each cell "
             "logs on its own node")


def describe_parent(sweep, project_dir: Path) -> str:
    """The dry run's line: where the parent run will be (it is found or made only at launch)."""
    uri = runner.tracking_uri(sweep.cells[0], project_dir)
    if uri is None:
        return NO_SERVER
    return (f"mlflow     the cells nest under the sweep's parent run in experiment "
            f"{sweep.loaded.recipe.mlflow.experiment} ({uri}), found or made at launch (its id reaches each job "
            f"as {MLFLOW_PARENT_RUN_ENV})")


def open_parent_run(sweep, project_dir: Path) -> tuple[Optional[str], str]:
    """(the sweep's parent MLflow run id, found or made; a line saying where), or (None, why there is none)."""
    first = sweep.cells[0]
    uri = runner.tracking_uri(first, project_dir)
    experiment = first.recipe.mlflow.experiment
    if uri is None:
        return None, NO_SERVER
    with server_client(uri, project_dir) as client:
        try:
            experiment_id = mlflow_experiment_id(client, experiment, uri)
            found = client.search_runs([experiment_id], max_results=1,
                                       filter_string=f"tags.`{MLFLOW_SWEEP_ID_TAG}` = '{sweep.sweep_id}'")
            if found:
                return found[0].info.run_id, f"mlflow     parent run {found[0].info.run_id} ({uri})"
            run = client.create_run(experiment_id, run_name=sweep.sweep_id,
                                    tags={MLFLOW_SWEEP_ID_TAG: sweep.sweep_id, "recipe": sweep.loaded.relpath,
                                          "target": sweep.target})
            for axis, entries in sweep.axes.items():
                client.log_param(run.info.run_id, f"sweep.{axis}", ", ".join(entries))
        except Exception as exc:  # MlflowException or the transport's: said in one line
            raise LaunchError(f"{sweep.loaded.relpath}: mlflow.tracking_uri: cannot make the sweep's parent run at "
                              f"{uri} ({one_line(exc)}): nothing launched") from None
    return run.info.run_id, f"mlflow     parent run {run.info.run_id} in experiment {experiment} ({uri})"


def close_parent_run(sweep, project_dir: Path, parent: str, *, finished: bool) -> None:
    """Mark the parent ended once every cell has (a launch that followed them all: runs here)."""
    end_parent_run(runner.tracking_uri(sweep.cells[0], project_dir), project_dir, parent, finished=finished)


def end_parent_run(uri: str, project_dir: Path, parent: str, *, finished: bool) -> None:
    """Mark the parent run at `uri` ended (its sweep's controller, once the last cell has)."""
    with server_client(uri, project_dir) as client:
        client.set_terminated(parent, status="FINISHED" if finished else "FAILED")

