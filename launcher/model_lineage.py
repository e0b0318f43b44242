"""What a registered model version says about the run that made it: which weights (in the run's store, with their
sha256 manifest: no second copy), and the lineage to rebuild them (the run and its MLflow run, the resolved
recipe, the commit, digests of the data it read, the checkpoint step, evaluation metrics, goodput, device-hours).
Read here from the run's record, store and MLflow run; `model_registry` writes it to MLflow."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from launcher.mlflow_runs import mlflow_run
from launcher.registry import RunRecord
from launcher.views.ledger import device_unit, record_ledger
from spottrain_contract import layout
from spottrain_contract.errors import UserError
from spottrain_contract.layout import FileEntry
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import from_shipped
from spottrain_contract.store import CheckpointStore

ADAPTER_DIR = "lora_adapter"  # a LoRA task's final export keeps its adapter here: small, logged as the model itself
EVALUATION_PREFIXES = ("test/", "val/", "eval/")


@dataclass(frozen=True)
class Weights:
    """The files a version points at: a directory of the run's store and each file's size and sha256."""

    uri: str  # the directory, as the store names it (s3://…/RUN/final-hf, or a path here)
    prefix: str  # its key in the store: RUN/final-hf/ or RUN/step-NNNNNNNN/
    step: int
    files: list[FileEntry]


@dataclass(frozen=True)
class Lineage:
    run_id: str
    checkpoint: str  # as asked: final, best or a step
    weights: Weights
    recipe_document: str  # the resolved recipe the run was launched with (`launch recipe` reproduces it)
    commit: str  # the commit the launch came from, `+dirty` where it had uncommitted changes; `unknown`
    mlflow_run_id: Optional[str]
    data: dict[str, dict] = field(default_factory=dict)  # each data setting: its file's or folder's digest
    metrics: dict[str, float] = field(default_factory=dict)  # evaluation metrics: the run's last, the step's own
    goodput: Optional[float] = None
    device_hours: Optional[float] = None
    device_unit: str = "GPU"

    def document(self) -> dict:
        """The lineage as the version's `lineage.json` keeps it (the resolved recipe is its own file)."""
        found = asdict(self)
        found.pop("recipe_document")
        return found


def weights_of(store: CheckpointStore, run_id: str, checkpoint: str) -> Weights:
    """The weights of a finished run's `checkpoint` (final: its final-hf/ export, hashed here; best or a step: a
    complete checkpoint, whose manifest has the digests), every file checked to be in the store. One line,
    nothing registered, for a run not finished, a checkpoint incomplete or files the store no longer holds."""
    stored = StoredRun(store, run_id)
    final_step = stored.completed()
    if final_step is None:
        raise UserError(f"run {run_id} has not finished (no {layout.RUN_COMPLETE} in {store.uri}/{run_id}): only "
                        f"a finished run's model is registered")
    if checkpoint == "final":
        prefix = f"{run_id}/{layout.FINAL_EXPORT}/"
        keys = store.list(prefix)
        if not keys:
            raise UserError(f"run {run_id}: the store no longer holds its {layout.FINAL_EXPORT}/ ({store.uri}/"
                            f"{prefix}): nothing to register")
        return Weights(_uri(store, prefix), prefix, final_step, [_hashed(store, key, prefix) for key in keys])
    step = _step(stored, checkpoint)
    prefix = layout.step_prefix(run_id, step)
    if step not in stored.complete_steps():
        raise UserError(f"checkpoint {step} of run {run_id} is incomplete (no {layout.MANIFEST} in {store.uri}/"
                        f"{prefix}): register a complete one (best, final or a step with a manifest)")
    weights = Weights(_uri(store, prefix), prefix, step, stored.manifest(step).files)
    if missing := missing_files(store, weights):
        raise UserError(f"checkpoint {step} of run {run_id}: the store no longer holds {len(missing)} of its files "
                        f"({missing[0]}…): nothing registered")
    return weights


def _step(stored: StoredRun, checkpoint: str) -> int:
    if checkpoint == "best":
        best = stored.best_step()
        if best is None:
            raise UserError(f"--checkpoint best: run {stored.run_id} has no best checkpoint (no evaluation): pass "
                            f"--checkpoint final or a step")
        return best
    if not checkpoint.isdigit():
        raise UserError(f"--checkpoint: expected best, final or a step number, got {checkpoint!r}")
    return int(checkpoint)


def _uri(store: CheckpointStore, prefix: str) -> str:
    return f"{store.uri.rstrip('/')}/{prefix.rstrip('/')}"


def _hashed(store: CheckpointStore, key: str, prefix: str) -> FileEntry:
    """A file of the store, its sha256 streamed through a temporary file (weights may be larger than memory)."""
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "file"
        store.get_file(key, local)
        return FileEntry(path=key[len(prefix):], size=local.stat().st_size, sha256=layout.sha256_of(local))


def missing_files(store: CheckpointStore, weights: Weights) -> list[str]:
    """The files of `weights` the store no longer holds whole (gone, or of another size)."""
    return [entry.path for entry in weights.files if store.size(weights.prefix + entry.path) != entry.size]


def adapter_files(store: CheckpointStore, weights: Weights, into: Path) -> bool:
    """A LoRA adapter among the weights (megabytes) copied into `into`, to be logged as the model itself; False
    where there is none."""
    adapter = [entry for entry in weights.files if entry.path.startswith(f"{ADAPTER_DIR}/")]
    for entry in adapter:
        store.get_file(weights.prefix + entry.path, into / entry.path)
    return bool(adapter)


def lineage_of(record: RunRecord, store: CheckpointStore, checkpoint: str) -> Lineage:
    """Everything a version records of the run `record` and its `checkpoint` (the weights checked first)."""
    weights = weights_of(store, record.run_id, checkpoint)
    document = record.recipe_document or (store.get_bytes(f"{record.run_id}/{layout.LAUNCHED_RECIPE}") or b"").decode()
    if not document:
        raise UserError(f"run {record.run_id}: neither its record nor its store keeps the recipe it was launched "
                        f"with: a version without it could not be rebuilt")
    _, run = mlflow_run(record)
    metrics = {key: value for key, value in (run.data.metrics.items() if run else ())
               if key.startswith(EVALUATION_PREFIXES)}
    if checkpoint != "final":
        metrics.update(StoredRun(store, record.run_id).manifest(weights.step).metrics)
    ledger = record_ledger(store, record)
    return Lineage(run_id=record.run_id, checkpoint=checkpoint, weights=weights, recipe_document=document,
                   commit=(run.data.tags.get("git_commit") if run else None) or "unknown",
                   mlflow_run_id=run.info.run_id if run else None,
                   data=data_digests(document, record.run_id, Path(record.project or ".")), metrics=metrics,
                   goodput=ledger.goodput if ledger.attempts else None,
                   device_hours=ledger.device_hours if ledger.attempts else None, device_unit=device_unit(ledger))


def data_digests(document: str, run_id: str, project_dir: Path) -> dict[str, dict]:
    """Each setting of the recipe's `train.data` that names a file or folder here: a file (JSONL, a CSV) by its
    sha256, a folder (images) by the sha256 of its manifest (every file's path and sha256, sorted). A path not on
    this machine (a platform's node, a volume) is named as unread; other values ('generated') are left out."""
    data = getattr(from_shipped(document, run_id).recipe.train, "data", None)
    found = {}
    for name, value in (data.model_dump() if data is not None else {}).items():
        if not isinstance(value, str) or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else project_dir / value
        if path.is_file():
            found[name] = {"path": value, "sha256": layout.sha256_of(path), "bytes": path.stat().st_size}
        elif path.is_dir():
            found[name] = {"path": value, **folder_digest(path)}
        elif "/" in value:
            found[name] = {"path": value, "unread": "not on this machine"}
    return found


def folder_digest(folder: Path) -> dict:
    """A folder by its manifest: the sha256 of `<sha256>  <relative path>` lines, one per file, sorted by path."""
    lines = [f"{layout.sha256_of(path)}  {path.relative_to(folder).as_posix()}"
             for path in sorted(p for p in folder.rglob("*") if p.is_file())]
    return {"files": len(lines), "manifest_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
