"""The model registry's operations: `launch register` (a run's checkpoint as a registered version), `launch models`
and the hub's Models page (names, versions, aliases, their runs, whether their files are still in the store), and
`models:/NAME@ALIAS` or `models:/NAME/VERSION` read back to the run and checkpoint that `launch eval`/`predict`
use."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Optional

from launcher import registering
from launcher.model_lineage import Weights, missing_files
from launcher.model_registry import LINEAGE_FILE, ModelRef, ModelRegistry, set_alias, spottrain_tags, version_of
from launcher.operations.workspace import Workspace
from launcher.registry import RunRecord
from launcher.run_store import run_store
from launcher.views.models import ModelVersionView, RegisteredModelView
from spottrain_contract.errors import UserError
from spottrain_contract.layout import FileEntry
from spottrain_contract.registration import Registration

RELAUNCH_TAG = "spottrain.relaunch"


@dataclass(frozen=True)
class RegisterRequest:
    """`launch register RUN --checkpoint C --name NAME [--alias A] [--mlflow URI]`."""

    run_id: str
    name: str
    checkpoint: str = "final"  # final, best or a step
    alias: Optional[str] = None
    mlflow: Optional[str] = None  # the registry's MLflow URI (default: where the run logged)


def register(ws: Workspace, request: RegisterRequest) -> ModelVersionView:
    """A registered version of the run's checkpoint; nothing registered (one line) for a run not finished, a
    checkpoint incomplete or files its store no longer holds."""
    from pydantic import ValidationError

    record = ws.registry.get(request.run_id)
    try:
        registration = Registration(name=request.name, alias=request.alias, checkpoint=request.checkpoint)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise UserError(f"--{problem['loc'][0]}: {problem['msg'].removeprefix('Value error, ')}") from None
    uri = registering.registry_uri_of(record, request.mlflow)
    version = registering.register_run(record, registration, uri)
    with registering.model_registry(uri, ws.project_dir) as registry:
        registry.client.set_model_version_tag(request.name, version.version, RELAUNCH_TAG,
                                              shlex.join(relaunch_arguments(record)))
        return _view(registry, version_of(registry, ModelRef(request.name, version=version.version)), record)


def registration_of(ws: Workspace, run_id: str) -> Optional[str]:
    """What the recipe's `register:` made of the finished run, one line (None: it asks for nothing)."""
    return ws.registry.get(run_id).handle.get(registering.REGISTERED)


def relaunch_arguments(record: RunRecord) -> list[str]:
    """`launch recipe` arguments resolving the recipe the run was launched with (its file, profile, overrides)."""
    from spottrain_contract.recipe import from_shipped

    launched = from_shipped(record.recipe_document, record.run_id)
    overrides = [*launched.cell.overrides] if launched.cell else []
    return [launched.name, *(["--profile", launched.profile] if launched.profile else []),
            *(f"--override={o}" for o in [*overrides, *launched.overrides])]


def registry_uri(ws: Workspace, given: Optional[str]) -> str:
    """The Model Registry a command without a run reads: the MLflow URI given, else MLFLOW_TRACKING_URI, else the
    one this project's newest run logged to."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    for record in ws.registry.all():
        if record.tracking_uri:
            return record.tracking_uri
    raise UserError("no MLflow server known here: name it with --mlflow URI (or set MLFLOW_TRACKING_URI)")


def models(ws: Workspace, mlflow: Optional[str] = None, name: Optional[str] = None) -> list[RegisteredModelView]:
    """Every registered model (or `name`) with its versions, newest first, each with its aliases, its run and the
    files of its manifest the store no longer holds."""
    uri = registry_uri(ws, mlflow)
    with registering.model_registry(uri, ws.project_dir) as registry:
        client = registry.client
        found = [client.get_registered_model(name)] if name else list(client.search_registered_models())
        views = []
        for model in sorted(found, key=lambda m: m.name):
            # a search leaves each version's aliases out; the registered model has them all
            versions = [client.get_model_version(model.name, v.version)
                        for v in client.search_model_versions(f"name = '{model.name}'")]
            views.append(RegisteredModelView(name=model.name, description=model.description or "", versions=[
                _view(registry, v, _record(ws, v)) for v in sorted(versions, key=lambda v: -int(v.version))]))
        return views


def set_model_alias(ws: Workspace, model: str, alias: str, mlflow: Optional[str] = None) -> ModelVersionView:
    """Move `alias` to the version `model` (models:/NAME/VERSION) names; one line if there is no such version."""
    ref = ModelRef.parse(model)
    Registration(name=ref.name, alias=alias)
    with registering.model_registry(registry_uri(ws, mlflow), ws.project_dir) as registry:
        version = set_alias(registry, ref, alias)
        return _view(registry, version_of(registry, ModelRef(ref.name, version=version.version)), _record(ws, version))


def resolve(ws: Workspace, model: str, mlflow: Optional[str] = None) -> tuple[str, str]:
    """(run id, checkpoint step) of the version `model` names, for `launch eval`/`predict`."""
    ref = ModelRef.parse(model)
    with registering.model_registry(registry_uri(ws, mlflow), ws.project_dir) as registry:
        tags = spottrain_tags(version_of(registry, ref))
    if "run_id" not in tags:
        raise UserError(f"{model}: not registered by launch register (it names no spottrain run)")
    return tags["run_id"], tags["step"]


def _record(ws: Workspace, version) -> Optional[RunRecord]:
    run_id = spottrain_tags(version).get("run_id")
    return ws.registry.get(run_id) if run_id and ws.registry.exists(run_id) else None


def _view(registry: ModelRegistry, version, record: Optional[RunRecord]) -> ModelVersionView:
    tags = spottrain_tags(version)
    aliases = list(version.aliases or [])
    return ModelVersionView(
        name=version.name, version=str(version.version), aliases=aliases, created=version.creation_timestamp / 1000,
        run_id=tags.get("run_id"), mlflow_run_id=tags.get("mlflow_run_id") or None, checkpoint=tags.get("checkpoint"),
        step=int(tags["step"]) if "step" in tags else None, weights=tags.get("weights"), commit=tags.get("commit"),
        goodput=float(tags["goodput"]) if "goodput" in tags else None, device_hours=tags.get("device_hours"),
        metrics={key[len("metric."):]: float(value) for key, value in tags.items() if key.startswith("metric.")},
        missing_files=_missing(registry, version, record),
        relaunch=shlex.split(version.tags.get(RELAUNCH_TAG, "")))


def _missing(registry: ModelRegistry, version, record: Optional[RunRecord]) -> Optional[list[str]]:
    """The files of the version's manifest its run's store no longer holds (None: its run or store is not
    reachable from here)."""
    if record is None:
        return None
    try:
        weights = lineage_document(registry, version)["weights"]
        files = [FileEntry(**entry) for entry in weights["files"]]
        return missing_files(run_store(record), Weights(weights["uri"], weights["prefix"], weights["step"], files))
    except Exception:  # a store or an artifact out of reach here: the listing still stands, unchecked
        return None


def logged_model_id(version) -> str:
    """The logged model a version registers (its source is models:/<id>; a server may not return model_id)."""
    return version.model_id or version.source.removeprefix("models:/")


def lineage_document(registry: ModelRegistry, version) -> dict:
    """The version's lineage.json, read from its logged model's artifacts."""
    import json
    import tempfile

    import mlflow.artifacts

    location = registry.client.get_logged_model(logged_model_id(version)).artifact_location
    with tempfile.TemporaryDirectory() as scratch:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{LINEAGE_FILE}", dst_path=scratch,
                                                   tracking_uri=registry.uri)
        with open(path) as file:
            return json.load(file)
