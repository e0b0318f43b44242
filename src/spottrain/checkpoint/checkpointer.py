"""Save, upload, complete, prune and restore the checkpoints of one run.

Save (every rank, in the loop): DeepSpeed writes this rank's shards to local disk, the trainer adds the rank's
RNG state (and, on rank 0, the trainer state); then the upload is queued and the loop goes on.
Upload (background, in order): each rank uploads the files it owns and a part list of them; rank 0 waits for
every part, writes MANIFEST.json last, points BEST.json at it if it is the best so far, then applies retention.
Restore: newest complete manifest; each rank fetches only the files it reads, reusing verified local copies.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from spottrain import runtime
from spottrain.checkpoint import layout
from spottrain.checkpoint.layout import FileEntry, Manifest
from spottrain.checkpoint.retention import checkpoints_to_delete
from spottrain.checkpoint.store import CheckpointStore, with_retries

log = logging.getLogger(__name__)
PARTS_TIMEOUT_S = 3600.0


class UploadFailed(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, *, store: CheckpointStore, local_root: Path, run_id: str, ranks: runtime.Ranks,
                 keep: int, on_retry: Optional[Callable[[str], None]] = None):
        self.store, self.run_id, self.ranks, self.keep = store, run_id, ranks, keep
        self.local_dir = Path(local_root) / run_id
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.upload_retries = 0
        self._on_retry = on_retry
        self.attempt = runtime.shared_token()  # the same on every rank, new at every (re)start

    # --- save ------------------------------------------------------------------------------------------------

    def save(self, engine, step: int, trainer_state: dict, *, final: bool = False, best: bool = False,
             metrics: Optional[dict] = None, extra_tensors: Optional[dict[str, Optional[dict]]] = None) -> Future:
        """Write this rank's part locally (all ranks call this) and queue its upload; returns at once.

        `extra_tensors` (name → state dict, filled on rank 0) are written beside it as NAME.safetensors."""
        tag = layout.step_tag(step)
        step_dir = self.local_dir / tag
        engine.save_checkpoint(str(self.local_dir), tag=tag, client_state={}, save_latest=False)
        torch.save(runtime.rng_state(), step_dir / f"rng-rank-{self.ranks.rank:05d}.pt")
        if self.ranks.is_main:
            from safetensors.torch import save_file

            (step_dir / layout.TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
            for name, tensors in (extra_tensors or {}).items():
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(step_dir / f"{name}.safetensors"))
        runtime.barrier()  # every rank's files are on disk before anyone lists the directory
        owned = [p for p in sorted(step_dir.rglob("*")) if p.is_file() and self._owns(p.relative_to(step_dir))]
        future = self._pool.submit(self._upload, step, step_dir, owned, final, best, dict(metrics or {}))
        with self._lock:
            self._pending.append(future)
        return future

    def _owns(self, relative: Path) -> bool:
        owner = layout.owner_rank(str(relative))
        return owner == self.ranks.rank if owner is not None else self.ranks.is_main

    def _upload(self, step: int, step_dir: Path, files: list[Path], final: bool, best: bool,
                metrics: dict) -> None:
        prefix = layout.step_prefix(self.run_id, step)
        entries = []
        for path in files:
            relative = str(path.relative_to(step_dir))
            self._retry(lambda: self.store.put_file(path, prefix + relative), f"upload {prefix}{relative}")
            entries.append(FileEntry(relative, path.stat().st_size, layout.sha256_of(path)))
        part = json.dumps({"attempt": self.attempt, "files": [asdict(e) for e in entries]}).encode()
        self._retry(lambda: self.store.put_bytes(part, f"{prefix}{layout.PARTS}/rank-{self.ranks.rank:05d}.json"),
                    f"upload part list of {prefix}")
        if self.ranks.is_main:
            manifest = Manifest(step=step, world_size=self.ranks.world_size, final=final,
                                files=self._gather_parts(prefix), metrics=metrics)
            self._retry(lambda: self.store.put_bytes(manifest.to_json(), prefix + layout.MANIFEST),
                        f"write manifest of {prefix}")
            if best:
                pointer = json.dumps({"step": step, "metrics": metrics}).encode()
                self._retry(lambda: self.store.put_bytes(pointer, f"{self.run_id}/{layout.BEST_POINTER}"),
                            "write best pointer")
            self.apply_retention(final_step=step if final else None)
        self._prune_local(before=step)

    def _gather_parts(self, prefix: str) -> list[FileEntry]:
        """Every rank's part list of this attempt. A part left by an earlier attempt that died at the same step
        does not count: its rank may still be re-uploading the files it describes."""
        deadline = time.monotonic() + PARTS_TIMEOUT_S
        while True:
            keys = self._retry(lambda: self.store.list(prefix + layout.PARTS + "/"), f"list parts of {prefix}")
            parts = [json.loads(self._retry(lambda: self.store.get_bytes(k), f"read {k}") or b"{}")
                     for k in keys if k.endswith(".json")]
            current = [p for p in parts if p.get("attempt") == self.attempt]
            if len(current) >= self.ranks.world_size:
                break
            if time.monotonic() > deadline:
                raise UploadFailed(f"{prefix}: only {len(current)} of {self.ranks.world_size} ranks uploaded")
            time.sleep(0.2)
        entries = [FileEntry(**e) for part in current for e in part["files"]]
        return sorted(entries, key=lambda e: e.path)

    def _retry(self, action, what: str):
        def note(message: str):
            self.upload_retries += 1
            log.warning(message)
            if self._on_retry:
                self._on_retry(message)

        return with_retries(action, what=what, on_retry=note)

    def _prune_local(self, before: int) -> None:
        """Local disk holds only what is not yet safely in the store; never another rank's files."""
        for step_dir in self.local_dir.glob("step-*"):
            step = layout.step_of(step_dir.name)
            if step is None or step >= before:
                continue
            for path in step_dir.rglob("*"):
                if path.is_file() and self._owns(path.relative_to(step_dir)):
                    path.unlink(missing_ok=True)
            if self.ranks.local_rank == 0 and not any(p.is_file() for p in step_dir.rglob("*")):
                shutil.rmtree(step_dir, ignore_errors=True)

    def publish_directory(self, directory: Path, name: str) -> None:
        """Upload a directory (the final export) under `<run id>/<name>/` and check every size arrived."""
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{self.run_id}/{name}/{path.relative_to(directory)}"
            self._retry(lambda: self.store.put_file(path, key), f"upload {key}")
            if self.store.size(key) != path.stat().st_size:
                raise UploadFailed(f"{key}: size in the store differs from the local file")

    def wait(self) -> None:
        """Block until every queued upload finished; raise if any failed after its retries."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = []
        for future in pending:
            try:
                future.result()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise UploadFailed(f"{len(errors)} checkpoint upload(s) failed: {errors[0]}") from errors[0]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- what is in the store --------------------------------------------------------------------------------

    def complete_steps(self) -> list[int]:
        return self._keys_by_step(self.store.list(f"{self.run_id}/"))[0]

    def _keys_by_step(self, keys: list[str]) -> tuple[list[int], dict[int, list[str]]]:
        """(complete steps, sorted; every step's keys) from a listing of this run's prefix."""
        complete, by_step = [], {}
        for key in keys:
            parts = key.split("/")
            if len(parts) < 3 or (step := layout.step_of(parts[1])) is None:
                continue
            by_step.setdefault(step, []).append(key)
            if len(parts) == 3 and parts[2] == layout.MANIFEST:
                complete.append(step)
        return sorted(complete), by_step

    def manifest(self, step: int) -> Manifest:
        return Manifest.from_json(self.store.get_bytes(layout.step_prefix(self.run_id, step) + layout.MANIFEST))

    def best_step(self) -> Optional[int]:
        pointer = self.store.get_bytes(f"{self.run_id}/{layout.BEST_POINTER}")
        return json.loads(pointer)["step"] if pointer else None

    def apply_retention(self, final_step: Optional[int] = None) -> list[int]:
        """Retention over complete checkpoints, then the debris of killed attempts: a step older than the newest
        complete one that never got its manifest can no longer complete (attempts run one at a time and save
        in step order; a resumed attempt that reaches that step again writes it anew), so its files go."""
        listed = self._retry(lambda: self.store.list(f"{self.run_id}/"), "list checkpoints")
        complete, keys_by_step = self._keys_by_step(listed)
        for step, keys in sorted(keys_by_step.items()):
            if complete and step < complete[-1] and step not in complete:
                self._retry(lambda: self.store.delete(keys), f"delete incomplete step {step}")
        best = self._retry(self.best_step, "read best pointer")
        finals = {s for s in complete if s == final_step}
        doomed = checkpoints_to_delete(complete, keep=self.keep, best=best, final=finals)
        deleted = []
        for step in doomed:
            if self._retry(lambda: self.manifest(step), f"read manifest of step {step}").final:
                continue  # a final checkpoint is kept even when it is no longer the newest
            prefix = layout.step_prefix(self.run_id, step)
            manifest = prefix + layout.MANIFEST
            # The manifest goes first: a crash mid-delete leaves an incomplete (ignored) checkpoint.
            self._retry(lambda: self.store.delete([manifest]), f"delete {prefix}")
            rest = [key for key in keys_by_step[step] if key != manifest]
            self._retry(lambda: self.store.delete(rest), f"delete {prefix}")
            deleted.append(step)
        return deleted

    # --- restore ---------------------------------------------------------------------------------------------

    def fetch(self, manifest: Manifest) -> Path:
        """This rank's files of a complete checkpoint on local disk; verified local copies are not refetched."""
        if manifest.world_size != self.ranks.world_size:
            raise RuntimeError(f"checkpoint step {manifest.step} of run {self.run_id} was written by "
                               f"{manifest.world_size} ranks, this job has {self.ranks.world_size}: resume with "
                               f"the same GPUs × nodes")
        step_dir = self.local_dir / layout.step_tag(manifest.step)
        prefix = layout.step_prefix(self.run_id, manifest.step)
        shared = [e for e in manifest.files if layout.owner_rank(e.path) is None]
        own = [e for e in manifest.files if layout.owner_rank(e.path) == self.ranks.rank]
        if self.ranks.local_rank == 0:
            self._download(shared, prefix, step_dir)
        self._download(own, prefix, step_dir)
        runtime.barrier()
        return step_dir

    def _download(self, entries: list[FileEntry], prefix: str, step_dir: Path) -> None:
        for entry in entries:
            local = step_dir / entry.path
            if local.is_file() and local.stat().st_size == entry.size and layout.sha256_of(local) == entry.sha256:
                continue
            self._retry(lambda: self.store.get_file(prefix + entry.path, local), f"download {prefix}{entry.path}")
            if layout.sha256_of(local) != entry.sha256:
                raise RuntimeError(f"{prefix}{entry.path}: checksum differs from the manifest")

    def restore(self, engine, manifest: Manifest) -> dict:
        """Weights, optimizer, scheduler, this rank's RNG; returns the trainer state saved with them."""
        step_dir = self.fetch(manifest)
        tag = layout.step_tag(manifest.step)
        load_path, _ = engine.load_checkpoint(str(self.local_dir), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load {step_dir}")
        runtime.restore_rng_state(torch.load(step_dir / f"rng-rank-{self.ranks.rank:05d}.pt", weights_only=False))
        return json.loads((step_dir / layout.TRAINER_STATE).read_text())

    def verify(self, step: int) -> None:
        """The run succeeds only if its checkpoint is complete in the store with every size as written."""
        if step not in self.complete_steps():
            raise UploadFailed(f"checkpoint step {step} is not complete in {self.store.uri}")
        prefix = layout.step_prefix(self.run_id, step)
        for entry in self.manifest(step).files:
            if self.store.size(prefix + entry.path) != entry.size:
                raise UploadFailed(f"{prefix}{entry.path}: size in the store differs from the manifest")
