"""MLflow from rank 0 (the other ranks hold a `NullTracker`): one MLflow run per training run, continued after every
resume, never blocking the loop.

The run is found again by its `spottrain.run_id` tag, so a job restarted before its first checkpoint still
lands in the same MLflow run. Metrics go through a queue that a background thread flushes; while the server
is unreachable they stay buffered. What is not yet confirmed sent (`pending()`) is saved in every checkpoint
and queued again on resume (`requeue`), and steps the run already has are skipped: every step is logged
exactly once even when the process is killed before a flush. Wrong credentials are the one failure that
stops training, at start, with a message that says so.

System metrics come from MLflow's own monitor, one per node (`system/node0/...`, `system/node1/...`): rank 0's
Tracker runs its node's, the local rank 0 of every other node a `NodeSystemMetrics` logging into the same run.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from spottrain_contract.job import (GIT_COMMIT_ENV, MLFLOW_CELL_TAG, MLFLOW_PARENT_RUN_ENV, MLFLOW_PARENT_RUN_TAG,
                                    MLFLOW_RUN_ID_TAG, RESOLVED_RECIPE_FILE, TARGET_ENV, mlflow_experiment_id,
                                    mlflow_tracking_uri, sqlite_store_absent)

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0  # a metric reaches MLflow (and the hub's live curves) within a second: one batch a second
ROOT_NODE = 0  # rank 0's node: its Tracker logs that node's system metrics


class TrackingAuthError(RuntimeError):
    pass


def _answer_quickly() -> None:
    """MLflow's HTTP client retries for minutes by default; training neither waits that long nor needs to (what is
    unsent stays buffered). Settings the job's environment gives stand."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class Tracker:
    def __init__(self, *, uri: str, experiment: str, run_name: str, run_id: str, params: dict[str, str],
                 tags: dict[str, str], mlflow_run_id: Optional[str] = None, system_metrics: bool = True,
                 texts: Optional[dict[str, str]] = None, parent_run_id: Optional[str] = None):
        """`texts` (artifact file → content, e.g. the resolved recipe) are logged with the params, once, when the
        MLflow run is created. `parent_run_id`: the MLflow run this one is a child of (a sweep's, for each of its
        cells), set as MLflow's `mlflow.parentRunId` tag."""
        _answer_quickly()
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment, self.run_name, self.run_id = uri, experiment, run_name, run_id
        self.params, self.texts = params, dict(texts or {})
        self.tags = {**tags, **({MLFLOW_PARENT_RUN_TAG: parent_run_id} if parent_run_id else {})}
        self.client = MlflowClient(tracking_uri=uri)
        self.mlflow_run_id = mlflow_run_id
        self._logged_through: dict[str, int] = {}
        self._queue: list[tuple[str, float, int, int]] = []
        self._inflight: list[tuple[str, float, int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._system_metrics = system_metrics
        self._monitor = None
        self._down_since: Optional[float] = None
        self._ready = False
        self._params_pending = False
        self._flushing = threading.Lock()  # one flush at a time: `pending()` must see every unconfirmed batch
        try:
            self._ensure_run()
        except TrackingAuthError:
            raise
        except Exception as exc:  # server down: train anyway, create the run when it is back
            self._note_down(exc)
        self._thread = threading.Thread(target=self._flush_forever, name="mlflow-flush", daemon=True)
        self._thread.start()

    # --- the run ---------------------------------------------------------------------------------------------

    def _ensure_run(self) -> None:
        if self._ready:
            return
        try:
            self._find_or_create_run()
        except Exception as exc:
            if _is_auth_failure(exc):
                raise TrackingAuthError(
                    f"MLflow at {self.uri} rejected the request ({_status(exc)}): check the MLFLOW_TRACKING_USERNAME "
                    f"and MLFLOW_TRACKING_PASSWORD secrets and that this user may write to experiment "
                    f"{self.experiment!r}") from None
            raise
        self._ready = True

    def _find_or_create_run(self) -> None:
        experiment_id = mlflow_experiment_id(self.client, self.experiment, self.uri)
        if self.mlflow_run_id is not None and not self._exists(self.mlflow_run_id):
            self.mlflow_run_id = None  # a checkpoint from another tracking store (e.g. a fresh local database)
        if self.mlflow_run_id is None:
            found = self.client.search_runs([experiment_id], max_results=1,
                                            filter_string=f"tags.`{MLFLOW_RUN_ID_TAG}` = '{self.run_id}'")
            self.mlflow_run_id = found[0].info.run_id if found else None
        if self.mlflow_run_id is None:
            run = self.client.create_run(experiment_id, run_name=self.run_name,
                                         tags={**self.tags, MLFLOW_RUN_ID_TAG: self.run_id})
            self.mlflow_run_id = run.info.run_id
            self._params_pending = True  # until they are sent: a drop right after create_run must not lose them
        else:
            self.client.update_run(self.mlflow_run_id, status="RUNNING")
            if MLFLOW_PARENT_RUN_TAG in self.tags:  # a run created before its sweep had a parent is nested now
                self.client.set_tag(self.mlflow_run_id, MLFLOW_PARENT_RUN_TAG, self.tags[MLFLOW_PARENT_RUN_TAG])
            self._logged_through = self._already_logged()
        if self._params_pending:
            self._log_params()
            self._params_pending = False
        if self._system_metrics and self._monitor is None:
            self._start_system_metrics()

    def _exists(self, mlflow_run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(mlflow_run_id)
            return True
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise

    def _log_params(self) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(self.params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.mlflow_run_id, params=items[start:start + 100])
        for artifact_file, text in self.texts.items():
            self.client.log_text(self.mlflow_run_id, text, artifact_file)

    def _already_logged(self) -> dict[str, int]:
        """Last step of every metric the run already has: a resumed run re-computes those steps bit for bit,
        so logging them again would only duplicate points. `system/` is MLflow's own monitor, which counts
        its samples with a step of its own."""
        run = self.client.get_run(self.mlflow_run_id)
        return {key: max(m.step for m in self.client.get_metric_history(self.mlflow_run_id, key))
                for key in run.data.metrics if not key.startswith("system/")}

    def _start_system_metrics(self) -> None:
        self._monitor = start_system_metrics(self.mlflow_run_id, self.uri, ROOT_NODE)

    # --- metrics ---------------------------------------------------------------------------------------------

    def log(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        with self._lock:
            self._queue.extend((key, float(value), stamp, step) for key, value in metrics.items())

    def tag(self, key: str, value: str) -> None:
        """A tag on the MLflow run now (a settings change at a resume); a server that is down only costs the tag."""
        try:
            self._ensure_run()
            self.client.set_tag(self.mlflow_run_id, key, value[:5000])
        except TrackingAuthError:
            raise
        except Exception as exc:
            log.warning("MLflow: could not tag %s: %s", key, exc)

    def log_artifacts(self, paths: list[Path]) -> None:
        """Files and directories as artifacts of the run (a task's predictions, its adapter), those that exist; a
        server that is down only costs the artifacts: the store keeps them with the run anyway."""
        try:
            self._ensure_run()
            for path in (p for p in paths if p.exists()):
                if path.is_dir():
                    self.client.log_artifacts(self.mlflow_run_id, str(path), artifact_path=path.name)
                else:
                    self.client.log_artifact(self.mlflow_run_id, str(path))
        except TrackingAuthError:
            raise
        except Exception as exc:
            log.warning("MLflow: could not log artifacts %s: %s", ", ".join(p.name for p in paths), exc)

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the MLflow run and what it has not yet confirmed receiving."""
        return {"mlflow_run_id": self.mlflow_run_id, "pending_metrics": self.pending()}

    def load_state_dict(self, state: dict) -> None:
        self.requeue(state["pending_metrics"])

    def pending(self) -> list[list]:
        """Metrics not yet confirmed sent (queued or being sent), as JSON-ready [key, value, stamp, step]."""
        with self._lock:
            return [list(m) for m in self._inflight + self._queue]

    def requeue(self, metrics: list[list]) -> None:
        """Metrics a previous attempt saved unsent; steps the run already has are dropped when flushing."""
        with self._lock:
            self._queue = [(k, float(v), int(t), int(s)) for k, v, t, s in metrics] + self._queue

    def flush(self) -> bool:
        """Send what is queued; False (and everything kept) if the server cannot be reached."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        from mlflow.entities import Metric

        with self._lock:
            batch, self._queue = self._queue, []
            self._inflight = batch
        try:
            self._ensure_run()
            fresh = [Metric(key, value, stamp, step) for key, value, stamp, step in batch
                     if step > self._logged_through.get(key, -1)]
            for start in range(0, len(fresh), 1000):
                self.client.log_batch(self.mlflow_run_id, metrics=fresh[start:start + 1000])
        except TrackingAuthError:
            raise
        except Exception as exc:
            with self._lock:
                self._queue = batch + self._queue
                self._inflight = []
            self._note_down(exc)
            return False
        with self._lock:
            self._inflight = []
            for key, _, _, step in batch:
                self._logged_through[key] = max(step, self._logged_through.get(key, -1))
        if self._down_since is not None:
            log.warning("MLflow at %s is reachable again; sent %d buffered metrics", self.uri, len(batch))
            self._down_since = None
        return True

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._queue)

    def _note_down(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("MLflow at %s unreachable (%s): training continues, metrics are buffered",
                        self.uri, type(exc).__name__)

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except TrackingAuthError as exc:
                log.error("%s", exc)

    def close(self, status: Optional[str], timeout: float = 60.0) -> None:
        """Stop the flusher, send what is left (trying for up to `timeout`), mark the run's status.

        status None leaves the run RUNNING: a preempted run is not over, its next attempt continues it."""
        self._stop.set()
        self._thread.join()
        if self._monitor is not None:
            self._monitor.finish()
        deadline = time.monotonic() + timeout
        try:
            while not self.flush() and time.monotonic() < deadline:
                time.sleep(1.0)
        except TrackingAuthError as exc:  # the run itself is done and checkpointed; say why metrics are missing
            log.error("%s", exc)
        if self.buffered:
            log.error("MLflow: %d metrics could not be sent to %s", self.buffered, self.uri)
        if status and self.mlflow_run_id:
            try:
                self.client.set_terminated(self.mlflow_run_id, status=status)
            except Exception as exc:
                log.error("MLflow: could not mark run %s: %s", status, exc)


@dataclass(frozen=True)
class RunShape:
    """How an attempt really runs, as its MLflow run is tagged: ranks, ranks per node, the device (`cpu` here) and
    the GPUs per node (0 on CPU)."""

    ranks: int
    per_node: int
    device: str
    gpus_per_node: int


def tracker_for(loaded, run_id: str, shape: RunShape) -> "Tracker":
    """The run's MLflow run (`loaded`: the LoadedRecipe): the resolved recipe as params and as an artifact, each
    user override once; tags say how it really ran (target, the device and how many) and the commit the launch came
    from. A sweep's cell also says which cell it is and what the cell changes, and nests under the sweep's parent
    run (made by the launcher, passed in the job's environment). The trainer's rank 0 and the wrapper around a
    command recipe's script make theirs here."""
    from spottrain_contract.recipe import settings_of

    recipe = loaded.recipe
    params = settings_of(recipe)
    params.update({"launch.recipe": loaded.relpath, "launch.profile": str(loaded.profile),
                   "launch.world_size": str(shape.ranks)})
    params.update({f"launch.override.{key}": value for key, _, value in (o.partition("=") for o in loaded.overrides)})
    tags = {"task": recipe.task, "target": os.environ.get(TARGET_ENV, "unknown"), "gpu": shape.device,
            "gpus": str(shape.gpus_per_node), "ranks": str(shape.ranks),
            "nodes": str(max(1, shape.ranks // shape.per_node)), "recipe": loaded.relpath,
            "git_commit": os.environ.get(GIT_COMMIT_ENV, "unknown"), **recipe.mlflow.tags}
    if loaded.cell is not None:  # one run of a sweep: which, and what its cell changes
        params.update({"launch.cell": loaded.cell.name,
                       **{f"launch.cell.{key}": str(value) for key, value in loaded.cell.overrides.items()}})
        tags[MLFLOW_CELL_TAG] = loaded.cell.name
    Path(recipe.train.checkpoint.local_dir).mkdir(parents=True, exist_ok=True)
    return Tracker(uri=mlflow_tracking_uri(recipe.mlflow.tracking_uri, recipe.train.checkpoint.local_dir),
                   experiment=recipe.mlflow.experiment, run_name=recipe.mlflow.run_name, run_id=run_id,
                   params=params, tags=tags, texts={RESOLVED_RECIPE_FILE: loaded.shipped()},
                   parent_run_id=os.environ.get(MLFLOW_PARENT_RUN_ENV) or None)


class NullTracker:
    """The tracker of every rank but 0, which alone talks to MLflow: the same calls, doing nothing, so that the loop
    never asks which rank it runs on. Registered with the checkpoints as rank 0's tracker is: the state saved is
    rank 0's."""

    mlflow_run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def tag(self, key: str, value: str) -> None:
        pass

    def log_artifacts(self, paths: list[Path]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self, status: Optional[str]) -> None:
        pass


# --- system metrics, one node each ----------------------------------------------------------------------------

_MONITOR_MODULE = "mlflow.system_metrics.system_metrics_monitor"


def node_id(node: int) -> str:
    """What a node's system metrics are named under: `system/node1/gpu_0_utilization_percentage`. Rank 0's node
    is `node0`, so a run's metrics are named alike whatever its number of nodes."""
    return f"node{node}"


def start_system_metrics(mlflow_run_id: str, uri: str, node: int):
    """MLflow's monitor of this machine (CPU, RAM, disk, network, every GPU), logging into the MLflow run as
    `system/<node id>/...` every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's default, 10 s, where
    the job's environment does not set it), its sample count continued across resumes. None where it cannot start:
    system metrics are a nicety, never a reason to stop."""
    try:
        monitor = importlib.import_module(_MONITOR_MODULE).SystemMetricsMonitor(
            mlflow_run_id, resume_logging=True, node_id=node_id(node), tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as exc:
        log.warning("system metrics of %s disabled: %s", node_id(node), exc)
        return None


class NodeSystemMetrics:
    """The system metrics of a node other than rank 0's, logged by its local rank 0 into the run's one MLflow run
    (rank 0 shares its id). The monitor starts off the training thread: asking MLflow where the samples left off
    may wait on a server this node reaches slowly or not at all, which must cost this node's system metrics, never
    the run's time."""

    def __init__(self, uri: str, mlflow_run_id: str, node: int):
        self._lock = threading.Lock()
        self._monitor = None
        self._finished = False
        threading.Thread(target=self._start, args=(uri, mlflow_run_id, node), name="system-metrics-start",
                         daemon=True).start()

    def _start(self, uri: str, mlflow_run_id: str, node: int) -> None:
        monitor = start_system_metrics(mlflow_run_id, uri, node)
        with self._lock:
            if not self._finished:
                self._monitor, monitor = monitor, None
        if monitor is not None:  # the attempt ended while it started
            monitor.finish()

    def finish(self) -> None:
        """Stop sampling and send what was sampled (the attempt ends)."""
        with self._lock:
            self._finished = True
            monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.finish()


def prepare_node_system_metrics(node: int) -> None:
    """Called by a node's local rank 0 before the model is built: another node than rank 0's imports MLflow's
    monitor meanwhile, on a background thread (seconds of imports), so its samples begin as soon as rank 0 shares
    its MLflow run, not seconds into training."""
    if node != ROOT_NODE:
        threading.Thread(target=importlib.import_module, args=(_MONITOR_MODULE,), name="system-metrics-import",
                         daemon=True).start()


def node_system_metrics(uri: str, mlflow_run_id: Optional[str], node: int) -> Optional[NodeSystemMetrics]:
    """A node's monitor (see NodeSystemMetrics), or None where it has nowhere to log: rank 0 had no MLflow run to
    share (its server was out of reach when the attempt started), or the store is a SQLite file on rank 0's node."""
    if node == ROOT_NODE or mlflow_run_id is None:
        return None
    if sqlite_store_absent(uri):
        log.info("system metrics of %s not logged: MLflow's store %s is on rank 0's node", node_id(node), uri)
        return None
    _answer_quickly()
    return NodeSystemMetrics(uri, mlflow_run_id, node)


_AUTH_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED", "UNAUTHORIZED")
_AUTH_STATUS = re.compile(r"(?:error code|status code|HTTP)\s*(401|403)\b|\b(401|403) (?:Unauthorized|Forbidden)")


def _status(exc: Exception) -> str:
    match = _AUTH_STATUS.search(str(exc))
    return f"HTTP {match.group(1) or match.group(2)}" if match else str(getattr(exc, "error_code", type(exc).__name__))


def _is_auth_failure(exc: Exception) -> bool:
    """401/403 from the server (never a port number or a body that happens to contain the digits)."""
    return getattr(exc, "error_code", None) in _AUTH_CODES or bool(_AUTH_STATUS.search(str(exc)))
