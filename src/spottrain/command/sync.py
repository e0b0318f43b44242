"""A command script's checkpoints between the node's disk and the run's store, in the trainer's layout
(`spottrain_contract.layout`): `<run id>/step-N/<name as the script saved it>/…`, MANIFEST.json written last, the
best pointer, retention, the final mark and COMPLETE.json. So `launch status`, the ledger, the hub and a later
stage read a command run like any other.

One uploader per run (the wrapper of node 0): a checkpoint arrives staged (`spottrain_contract.script.stage`),
whole, and is uploaded file by file under the store's retries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from spottrain.checkpoint.checkpointer import Transfers, apply_retention, publish_directory
from spottrain.runtime import Ranks
from spottrain_contract import layout
from spottrain_contract.layout import FileEntry, Manifest
from spottrain_contract.store import CheckpointStore


class ScriptCheckpoints:
    def __init__(self, store: CheckpointStore, run_id: str, local_root: Path, *, keep: int, best_mode: str):
        """`local_root`: the recipe's checkpoint.local_dir (downloads land under `<run id>/step-N/` first)."""
        self.transfers = Transfers(store, local_root, run_id, Ranks(rank=0, local_rank=0, world_size=1))
        self.store, self.run_id, self.stored = store, run_id, self.transfers.stored
        self.keep, self.best_mode = keep, best_mode
        self.best: Optional[float] = None  # the best metric so far, read from the store's pointer at restore

    def restore_into(self, checkpoint_dir: Path) -> Optional[tuple[int, Path, list]]:
        """The newest complete checkpoint, verified, moved into `checkpoint_dir` under the name the script gave
        it: (its step, its path there, the metrics of its steps MLflow had not confirmed when it was saved), or
        None before the first."""
        newest = self.transfers.retry(self.stored.newest, "find the newest checkpoint")
        pointer = self.transfers.retry(lambda: self.store.get_bytes(f"{self.run_id}/{layout.BEST_POINTER}"),
                                       "read the best pointer")
        self.best = json.loads(pointer).get("metric") if pointer else None
        if newest is None:
            return None
        step_dir = self.transfers.download(newest, every_file=True)
        names = sorted({entry.path.split("/")[0] for entry in newest.files})
        for name in names:
            shutil.move(str(step_dir / name), str(checkpoint_dir / name))
        shutil.rmtree(step_dir, ignore_errors=True)
        key = layout.step_prefix(self.run_id, newest.step) + layout.UNSENT_METRICS
        unsent = self.transfers.retry(lambda: self.store.get_bytes(key), f"read {key}")
        return newest.step, checkpoint_dir / names[0], json.loads(unsent) if unsent else []

    def publish(self, staged: Path, step: int, metric: Optional[float], ranks: int, unsent: list) -> None:
        """Upload a staged checkpoint (a directory or a file), the metrics of its steps MLflow had not confirmed
        (`unsent`, requeued by the attempt that resumes from it: steps before it are never reported again), then
        its manifest, then the best pointer where `metric` betters the best; retention; the staged copy goes."""
        prefix = layout.step_prefix(self.run_id, step)
        files = [staged] if staged.is_file() else sorted(p for p in staged.rglob("*") if p.is_file())
        meter = self.transfers.meter("upload", step, sum(path.stat().st_size for path in files))
        entries = []
        for path in files:
            relative = str(path.relative_to(staged.parent))
            self.transfers.retry(lambda: self.store.put_file(path, prefix + relative, progress=meter),
                                 f"upload {prefix}{relative}")
            entries.append(FileEntry(relative, path.stat().st_size, layout.sha256_of(path)))
        self.transfers.count("upload", meter)
        unsent_key = prefix + layout.UNSENT_METRICS
        self.transfers.retry(lambda: self.store.put_bytes(json.dumps(unsent).encode(), unsent_key),
                             f"upload {unsent_key}")
        metrics = {} if metric is None else {"metric": metric}
        self._write_manifest(Manifest(step=step, world_size=ranks, final=False, files=entries, metrics=metrics))
        if metric is not None and self._improves(metric):
            self.best = metric
            pointer = json.dumps({"step": step, "metric": metric, "metrics": metrics}).encode()
            self.transfers.retry(lambda: self.store.put_bytes(pointer, f"{self.run_id}/{layout.BEST_POINTER}"),
                                 "write best pointer")
        apply_retention(self.stored, keep=self.keep, retry=self.transfers.retry)
        shutil.rmtree(staged.parent, ignore_errors=True)

    def finish(self, step: int, export: Path) -> None:
        """The script ended its run: what it left in `export` is published as the run's final export, its newest
        checkpoint becomes the final one (kept whatever retention says) and the run is marked complete at `step`,
        the last step it reported."""
        if any(path.is_file() for path in export.rglob("*")):
            publish_directory(self.stored, export, layout.FINAL_EXPORT, retry=self.transfers.retry)
        newest = self.transfers.retry(self.stored.newest, "find the newest checkpoint")
        if newest is not None and not newest.final:
            newest.final = True
            self._write_manifest(newest)
            apply_retention(self.stored, keep=self.keep, retry=self.transfers.retry, final_step=newest.step)
        marker = json.dumps({"step": step}).encode()
        self.transfers.retry(lambda: self.store.put_bytes(marker, f"{self.run_id}/{layout.RUN_COMPLETE}"),
                             "mark complete")

    def metrics(self) -> dict[str, float]:
        return self.transfers.metrics()

    def _write_manifest(self, manifest: Manifest) -> None:
        key = layout.step_prefix(self.run_id, manifest.step) + layout.MANIFEST
        self.transfers.retry(lambda: self.store.put_bytes(manifest.to_json(), key), f"write {key}")

    def _improves(self, metric: float) -> bool:
        if self.best is None:
            return True
        return metric < self.best if self.best_mode == "min" else metric > self.best
