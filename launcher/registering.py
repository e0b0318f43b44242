"""Registering a run's model: its record, store and MLflow run read (`model_lineage`), a version written
(`model_registry`) in the MLflow server it logged to, or the one named. `launch register` asks for it; a recipe's
`register:` asks for it when the launcher first sees the run finished (`runner.refresh`), and what came of it is
said in the run's log and kept in its record."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from launcher.mlflow_runs import tracking_uri_of
from launcher.mlflow_server import server_client
from launcher.model_lineage import adapter_files, lineage_of
from launcher.model_registry import ModelRegistry, register
from launcher.registry import Registry, RunRecord
from launcher.errors import LaunchError
from launcher.run_store import run_store
from launcher.rundb.records import WeightsJobOf
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped
from spottrain_contract.registration import Registration
from spottrain_contract.store import store_failure

REGISTERED = "registered"  # the record's handle entry: what the recipe's `register:` made, or why it failed


@contextlib.contextmanager
def model_registry(uri: str, project_dir: Path) -> Iterator[ModelRegistry]:
    """The MLflow server (or SQLite store) at `uri`, with the credentials found here."""
    with server_client(uri, project_dir, timeout=30) as client:
        yield ModelRegistry(client, uri)


def registry_uri_of(record: RunRecord, given: Optional[str]) -> str:
    """Where a run's model is registered: the MLflow URI given, else the one the run logged to."""
    uri = given or tracking_uri_of(record)
    if not uri:
        raise UserError(f"run {record.run_id} logged to no MLflow server this machine reaches: name one with "
                        f"--mlflow URI")
    return uri


def register_run(record: RunRecord, registration: Registration, uri: str):
    """A new version for `record`'s run (which must be finished, its checkpoint complete and in its store)."""
    if WeightsJobOf.of(record) is not None:
        raise UserError(f"{record.run_id} is an eval or predict job, not a run: register the run it used")
    if record.state is not RunState.FINISHED:
        raise UserError(f"run {record.run_id} is {record.state}: only a finished run's model is registered")
    store = run_store(record)
    try:
        lineage = lineage_of(record, store, registration.checkpoint)
    except UserError:
        raise
    except Exception as exc:  # boto3 and the filesystem raise many types; every one means "cannot read"
        raise LaunchError(f"run {record.run_id}: its store {record.store} not read: {store_failure(exc)}") from None
    with tempfile.TemporaryDirectory() as scratch, model_registry(uri, Path(record.project or ".")) as registry:
        adapter = Path(scratch)
        has_adapter = adapter_files(store, lineage.weights, adapter)
        return register(registry, lineage, registration, adapter if has_adapter else None,
                        tracking_uri_of(record) or "")


def register_when_finished(registry: Registry, record: RunRecord) -> None:
    """A run whose recipe says `register:`, just seen finished: its version registered, or, where that fails,
    the failure said in its log and record (the run stays finished: its weights are in its store)."""
    wanted = from_shipped(record.recipe_document, record.run_id).recipe.registration if record.recipe_document else None
    if wanted is None or record.handle.get(REGISTERED):
        return
    try:
        version = register_run(record, wanted, registry_uri_of(record, None))
        said = f"registered as models:/{wanted.name}/{version.version}" + (
            f" (alias {wanted.alias})" if wanted.alias else "")
    except Exception as exc:  # MLflow, the store and the recipe fail in many ways; each is one line here
        said = f"not registered as {wanted.name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    registry.update(record.run_id, handle={REGISTERED: said})
    if record.log:
        with open(record.log, "a") as log:
            log.write(f"[launch {time.strftime('%H:%M:%S')}] run {record.run_id} {said}\n")
