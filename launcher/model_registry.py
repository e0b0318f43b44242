"""The MLflow Model Registry side of `launch register` and `launch models`: a version is an MLflow 3 logged model
(its artifacts: `lineage.json` with the weights' sha256 manifest, the resolved recipe, and a LoRA adapter itself
where the run made one; large weights stay in the run's store) registered under a name, with the lineage's short
facts as version tags and aliases (never the deprecated stages). `models:/NAME@ALIAS` and `models:/NAME/VERSION`
are read back to the run and checkpoint they name."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.model_lineage import Lineage
from spottrain_contract import layout
from spottrain_contract.errors import UserError
from spottrain_contract.job import mlflow_experiment_id
from spottrain_contract.registration import Registration

MODELS_EXPERIMENT = "spottrain-models"  # where a version's logged model lives when its run logged elsewhere
TAG = "spottrain."  # the version tags this launcher writes: spottrain.run_id, spottrain.step, …
LINEAGE_FILE = "lineage.json"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`, parsed."""

    name: str
    alias: Optional[str] = None
    version: Optional[str] = None

    @classmethod
    def parse(cls, uri: str) -> "ModelRef":
        match = _MODEL_URI.match(uri)
        if not match:
            raise UserError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return cls(match["name"], match["alias"], match["version"])

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def is_model_uri(text: str) -> bool:
    return text.startswith("models:/")


def version_tags(lineage: Lineage, tracking_uri: str) -> dict[str, str]:
    """The lineage's short facts as version tags (what `launch models` and the hub list; the rest is in
    lineage.json): the run, its MLflow run and where it is, the checkpoint, the weights, commit, goodput,
    device-hours and each evaluation metric."""
    tags = {"run_id": lineage.run_id, "mlflow_run_id": lineage.mlflow_run_id or "", "tracking_uri": tracking_uri,
            "checkpoint": lineage.checkpoint, "step": str(lineage.weights.step), "weights": lineage.weights.uri,
            "commit": lineage.commit}
    if lineage.goodput is not None:
        tags.update(goodput=f"{lineage.goodput:.4f}",
                    device_hours=f"{lineage.device_hours:.4f} {lineage.device_unit}-hours")
    tags.update({f"metric.{key}": repr(value) for key, value in sorted(lineage.metrics.items())})
    return {TAG + key: value for key, value in tags.items()}


@dataclass(frozen=True)
class ModelRegistry:
    """An MlflowClient (`launcher.mlflow_server.server_client`: credentials here) and the URI it talks to."""

    client: object
    uri: str


def register(registry: ModelRegistry, lineage: Lineage, registration: Registration, adapter: Optional[Path],
             tracking_uri: str):
    """A new version of `registration.name` (the registered model created on first use) for `lineage`, the alias
    moved to it; `adapter`: a LoRA adapter directory logged as the model itself. `tracking_uri`: where the run's
    MLflow run is (the version links to it where that is this registry's server)."""
    from mlflow.exceptions import MlflowException

    client = registry.client
    same_server = lineage.mlflow_run_id is not None and tracking_uri == registry.uri
    source_run = client.get_run(lineage.mlflow_run_id) if same_server else None
    experiment = source_run.info.experiment_id if source_run else mlflow_experiment_id(
        client, MODELS_EXPERIMENT, registry.uri)
    tags = version_tags(lineage, tracking_uri)
    model = client.create_logged_model(experiment, name=registration.name, tags=tags,
                                       source_run_id=lineage.mlflow_run_id if same_server else None)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch)
        (files / LINEAGE_FILE).write_text(json.dumps(lineage.document(), indent=1, sort_keys=True))
        (files / layout.LAUNCHED_RECIPE).write_text(lineage.recipe_document)
        client.log_model_artifacts(model.model_id, str(files))
    if adapter is not None:
        client.log_model_artifacts(model.model_id, str(adapter))
    client.finalize_logged_model(model.model_id, "READY")
    try:
        client.create_registered_model(registration.name, description="Registered by spottrain's launch register.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(registration.name, f"models:/{model.model_id}",
                                          run_id=lineage.mlflow_run_id if same_server else None, tags=tags,
                                          model_id=model.model_id,
                                          description=f"run {lineage.run_id}, {lineage.checkpoint} checkpoint "
                                                      f"(step {lineage.weights.step})")
    if registration.alias:
        client.set_registered_model_alias(registration.name, registration.alias, version.version)
    return version


def version_of(registry: ModelRegistry, ref: ModelRef):
    """The version `ref` names; one line when the name, alias or version is not in the registry."""
    from mlflow.exceptions import MlflowException

    client = registry.client
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        raise UserError(f"{ref}: not in the model registry at {registry.uri} (launch models lists what "
                        f"is)") from None


def spottrain_tags(version) -> dict[str, str]:
    """A version's tags this launcher wrote, without their `spottrain.` prefix (none: registered elsewhere)."""
    return {key[len(TAG):]: value for key, value in version.tags.items() if key.startswith(TAG)}


def set_alias(registry: ModelRegistry, ref: ModelRef, alias: str):
    """Move `alias` to the version `ref` names (checked to exist first: MLflow's own error is a traceback)."""
    version = version_of(registry, ref)
    registry.client.set_registered_model_alias(ref.name, alias, version.version)
    return version
