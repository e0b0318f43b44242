"""The job contract: what a launched job and the launcher agree on at run time (standard library only).

Environment variables the launcher sets and the trainer reads, the exit codes the trainer ends with and the
supervisors act on, the files through which a run reports where it is, the MLflow tag that finds a run's
MLflow run, and the one set of run states every target maps its platform's states onto.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Optional

TRAINER_MODULE = "spottrain"
RUN_ID_ENV = "SPOTTRAIN_RUN_ID"  # stable across restarts and recoveries: the trainer resumes by it
TARGET_ENV = "SPOTTRAIN_TARGET"  # where the launch sent the job (skypilot, vessl, local, ...)
RECIPE_ENV = "SPOTTRAIN_RECIPE"  # the recipe the launch resolved (YAML text): what the node trains
GIT_COMMIT_ENV = "SPOTTRAIN_GIT_COMMIT"  # the commit the launch came from, `+dirty` with uncommitted changes
EXIT_FILE_ENV = "SPOTTRAIN_EXIT_FILE"  # torchrun reports any worker failure as 1; the trainer writes its code here
MLFLOW_PARENT_RUN_ENV = "SPOTTRAIN_MLFLOW_PARENT_RUN_ID"  # a sweep's cell: the sweep's MLflow run, to nest under
MASTER_PORT = 29500
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "checkpointed on a preemption notice, start me again and I resume"
DO_NOT_RESTART_EXIT_CODE = 78  # EX_CONFIG: a fault no restart heals (bad settings or inputs, a refusing store)
MLFLOW_RUN_ID_TAG = "spottrain.run_id"  # on the MLflow run of a training run: its run id
MLFLOW_SWEEP_ID_TAG = "spottrain.sweep_id"  # on a sweep's parent MLflow run (made by the launcher): the sweep id
MLFLOW_CELL_TAG = "spottrain.cell"  # on the MLflow run of a sweep's cell: the cell's name
MLFLOW_PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: its UI nests the run under that one
PROGRESS_FILE = "progress.json"  # {"step", "total", "attempt_start"}, written by rank 0
EXIT_FILE = ".exit-code"  # where the local supervisor asks the trainer to write its exit code
FAILURE_FILE = "failure.txt"  # the first error of the first rank that failed, one line: why the attempt ended
STOP_REQUEST_FILE = ".stop-requested"  # written before the SIGTERM of a person's stop: not a spot notice
RESOLVED_RECIPE_FILE = "recipe.resolved.yaml"  # the shipped recipe, as an MLflow artifact of the run


class RunState(str, enum.Enum):
    """Where a run is. Every target maps its platform's states onto these; the CLI, registry and supervisor
    compare these, never strings. The values are what the registry stores and `launch status` prints."""

    LAUNCHING = "launching"  # the launcher is handing it to the target
    PENDING = "pending"  # accepted by the platform, waiting for capacity or starting
    RUNNING = "running"
    RESTARTING = "restarting"  # recovering after a preemption or a crash
    STOPPING = "stopping"  # asked to stop: checkpointing
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    PRUNED = "pruned"  # stopped by its sweep's search for losing (checkpoint kept: it can be resumed)
    UNKNOWN = "unknown"  # the platform cannot be asked right now
    DRAFT = "draft"  # saved in the hub, not launched yet: no target has seen it

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({RunState.FINISHED, RunState.FAILED, RunState.STOPPED, RunState.PRUNED})


def run_dir(local_dir: str | Path, run_id: str) -> Path:
    """`<checkpoint.local_dir>/<run id>/`: a run's local disk on a node, where its progress file lives."""
    return Path(local_dir) / run_id


def progress_path(local_dir: str | Path, run_id: str) -> Path:
    return run_dir(local_dir, run_id) / PROGRESS_FILE


def write_progress(path: Path, step: int, total: int, attempt_start: int) -> None:
    """The progress file, replaced whole (a reader never sees half of it): written by rank 0 of the trainer, or by
    the wrapper around a command recipe's script."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"step": step, "total": total, "attempt_start": attempt_start}))
    os.replace(partial, path)


def exit_file_path(local_dir: str | Path, run_id: str) -> Path:
    return run_dir(local_dir, run_id) / EXIT_FILE


def failure_path(local_dir: str | Path, run_id: str) -> Path:
    return run_dir(local_dir, run_id) / FAILURE_FILE


def stop_request_path(local_dir: str | Path, run_id: str) -> Path:
    """Where the local supervisor says a SIGTERM that follows is a person's stop (`launch stop`, the hub's Stop,
    Ctrl-C), so the trainer ends its attempt `stopped`, not `preempted`."""
    return run_dir(local_dir, run_id) / STOP_REQUEST_FILE


def mlflow_tracking_uri(configured: Optional[str], local_dir: str) -> str:
    """The recipe's server, else $MLFLOW_TRACKING_URI, else a SQLite store beside the local checkpoints."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(local_dir).resolve()}/mlflow.db"


def sqlite_store_absent(uri: str) -> bool:
    """A SQLite tracking store whose file is not on this machine: opening it would create an empty database
    that nobody reads (the hub asking of a run that has logged nothing yet; a node other than rank 0's, whose
    store lies beside rank 0's checkpoints)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()


def mlflow_experiment_id(client, experiment: str, uri: str) -> str:
    """The id of the MLflow experiment named `experiment` at `uri`, created if missing (`client`: an
    MlflowClient). Whichever side creates it first (the trainer, or the launcher for a sweep's parent run)
    creates it the same: a local SQLite store keeps its artifacts beside the database, not in `./mlruns` of
    whatever directory the job started in; a server decides for itself."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(experiment, artifact_location=artifacts)
