"""Save, upload, complete, prune and restore the checkpoints of one run; when to save, and what.

Policy (the loop only asks, `end_step(step, metrics=…, final=…, preempted=…)` at the end of every step): every
`every_steps`, at a new best of the best metric, at the final step, and whenever forced (a preemption notice on any
rank). State: the stateful parts of a run (loop position, the task's state, the tracker's unsent metrics) are
registered once and saved and restored through their `state_dict`/`load_state_dict`, as torchtitan's
CheckpointManager does.
Transfers: every file moves between a rank's disk and the store through the rank's `Transfers`, which an attempt
makes first, to prefetch the checkpoint it resumes from.

Save (every rank, in the loop): DeepSpeed's state for this rank is copied to host memory (`snapshot`), the
trainer writes the rank's RNG state (and, on rank 0, the trainer state); the loop goes on.
Write and upload (background, one save at a time): the snapshot's files go to local disk, then each rank uploads
the files it owns and a part list of them; rank 0 waits for every part, writes MANIFEST.json last, points
BEST.json at it if it is the best so far, then applies retention.
Restore: newest complete manifest; each rank fetches only the files it reads, reusing verified local copies. A
checkpoint of another world size (the capacity that came back) is fetched whole by each node's local rank 0 and
resharded (`elastic`).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

import torch

from spottrain import elastic, runtime
from spottrain.checkpoint.retention import checkpoints_to_delete
from spottrain.checkpoint.snapshot import snapshotting
from spottrain.checkpoint.transfers import TransferMeter
from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.layout import FileEntry, Manifest
from spottrain_contract.lookup import StoredRun, steps_in
from spottrain_contract.store import CheckpointStore, is_permanent, store_failure, with_retries

log = logging.getLogger(__name__)
PARTS_TIMEOUT_S = 3600.0
FETCH_THREADS = 8
UNIVERSAL_DIR = "universal"  # under the run's local directory: checkpoints converted for another world size


class ChecksumMismatch(RuntimeError):
    """A downloaded file differs from its manifest: fetched again (nothing below retries this)."""


class UploadFailed(RuntimeError):
    """A checkpoint could not be made durable after the store's retries; a new attempt may succeed."""


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SavePolicy:
    every_steps: int
    best_metric: str = "val/loss"
    best_mode: str = "min"

    def improves(self, metrics: dict, best: Optional[dict]) -> bool:
        """Whether evaluated `metrics` beat the best so far; a metric the task does not evaluate is a recipe
        error, said at the first evaluation."""
        if self.best_metric not in metrics:
            raise ConfigurationError(f"train.checkpoint.best_metric: {self.best_metric!r} is not evaluated by this task "
                             f"(it reports {', '.join(sorted(metrics))})")
        if best is None:
            return True
        value = metrics[self.best_metric]
        return value < best["value"] if self.best_mode == "min" else value > best["value"]


class Transfers:
    """This rank's checkpoint files between its local disk and the store, for every save and restore of one run:
    store calls retried where nothing below retries them, the bytes each way metered for people and totalled for
    MLflow (`metrics`), and each downloaded file checked against its manifest once per process.

    Made at the start of an attempt, before the Checkpointer, whose save policy needs the length of an epoch (known
    once the task is): `prefetch` lets a resumed attempt download its checkpoint while it builds its task, model
    and engine."""

    def __init__(self, store: CheckpointStore, local_root: Path, run_id: str, ranks: runtime.Ranks,
                 progress_every: float = 10.0):
        self.store, self.run_id, self.ranks, self.progress_every = store, run_id, ranks, progress_every
        self.local_dir = Path(local_root) / run_id
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.stored = StoredRun(store, run_id)
        self.retries = 0
        self._totals = {f"transfer/{way}_{what}": 0.0 for way in ("upload", "download")
                        for what in ("bytes", "seconds")}
        self._lock = threading.Lock()
        self._verified: set[tuple[Path, str]] = set()  # local files checked against a manifest in this process
        self._prefetched: Optional[Future] = None
        self._newest: Optional[Future] = None  # the newest complete manifest, known before its files arrive

    def metrics(self) -> dict[str, float]:
        """This rank's totals so far (rank 0 sends its own to MLflow): store calls retried, bytes and seconds each
        way."""
        with self._lock:
            return {"checkpoint/upload_retries": self.retries, **self._totals}

    # --- the checkpoint to resume from -----------------------------------------------------------------------

    def prefetch(self) -> None:
        """Start fetching this rank's files of the newest complete checkpoint in the background: a resumed
        attempt downloads while it builds its task, model and engine, and `newest` waits for the rest."""
        future, newest_known = Future(), Future()

        def fetch_newest() -> None:
            try:
                newest = self.stored.newest()
                newest_known.set_result(newest)
                if newest is not None:
                    self.download(newest)
                future.set_result(newest)
            except BaseException as exc:
                for pending in (newest_known, future):
                    if not pending.done():
                        pending.set_exception(exc)

        # A daemon thread: an attempt that fails before it resumes exits at once, not after the download.
        threading.Thread(target=fetch_newest, name="checkpoint-prefetch", daemon=True).start()
        self._prefetched, self._newest = future, newest_known

    def newest(self) -> Optional[Manifest]:
        """The newest complete checkpoint (None before the first), with this rank's files on local disk when it
        was prefetched."""
        return self._prefetched.result() if self._prefetched else self.stored.newest()

    def loads_universal(self) -> bool:
        """Whether the checkpoint to resume from holds ZeRO shards of another number of ranks: the engine must
        then be built to load DeepSpeed's universal format, into which the Checkpointer's `restore` converts it."""
        newest = self._newest.result() if self._newest else self.stored.newest()
        return newest is not None and _needs_universal(newest, self.ranks.world_size)

    # --- moving files ----------------------------------------------------------------------------------------

    def download(self, manifest: Manifest, every_file: bool = False) -> Path:
        """This rank's files on local disk (no collective: it may run on a background thread); verified local
        copies are not fetched again. A checkpoint of another world size is resharded on each node from all of
        its files: local rank 0 fetches them, the other ranks none. `every_file`: all of them, whoever owns them
        (a command script's checkpoint, which the node wrapper restores whole)."""
        step_dir = self.local_dir / layout.step_tag(manifest.step)
        prefix = layout.step_prefix(self.run_id, manifest.step)
        shared = [e for e in manifest.files if layout.owner_rank(e.path) is None]
        own = [e for e in manifest.files if layout.owner_rank(e.path) == self.ranks.rank]
        mine = (shared if self.ranks.local_rank == 0 else []) + own
        if manifest.world_size != self.ranks.world_size or every_file:
            mine = list(manifest.files) if self.ranks.local_rank == 0 else []
        # In parallel, file by file (checksums too: hashlib and the store's transfers release the GIL); a
        # verified local copy is reused, the rest downloads straight to its place.
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="checkpoint-fetch") as pool:
            reusable = list(pool.map(lambda e: self._verified_copy(step_dir / e.path, e), mine))
            missing = [entry for entry, reused in zip(mine, reusable) if not reused]
            meter = self.meter("download", manifest.step, sum(e.size for e in missing))
            list(pool.map(lambda entry: self.retry(lambda: self._download(prefix, entry, step_dir / entry.path,
                                                                          meter), f"download {prefix}{entry.path}"),
                          missing))
        self.count("download", meter)
        return step_dir

    def _verified_copy(self, local: Path, entry: FileEntry) -> bool:
        """A local file with the manifest's size and checksum (checked once per process: a prefetch verified it)."""
        if (local, entry.sha256) in self._verified:
            return local.is_file() and local.stat().st_size == entry.size
        if local.is_file() and local.stat().st_size == entry.size and layout.sha256_of(local) == entry.sha256:
            self._verified.add((local, entry.sha256))
            return True
        return False

    def _download(self, prefix: str, entry: FileEntry, local: Path, meter) -> None:
        self.store.get_file(prefix + entry.path, local, progress=meter)
        if layout.sha256_of(local) != entry.sha256:
            raise ChecksumMismatch(f"{prefix}{entry.path}: checksum differs from the manifest")
        self._verified.add((local, entry.sha256))

    def retry(self, action, what: str):
        """`action` under the store's retries, each retry counted and logged."""

        def note(message: str):
            self.retries += 1
            log.warning(message)

        return with_retries(action, what=what, on_retry=note)

    def meter(self, way: str, step: int, total: int) -> TransferMeter:
        return TransferMeter(f"checkpoint {way} {layout.step_tag(step)} (rank {self.ranks.rank})", total,
                             self.progress_every)

    def count(self, way: str, meter: TransferMeter) -> None:
        moved, seconds = meter.finish()
        with self._lock:
            self._totals[f"transfer/{way}_bytes"] += moved
            self._totals[f"transfer/{way}_seconds"] += seconds


class StepEnd(NamedTuple):
    """What the loop acts on at the end of a step (`Checkpointer.end_step`)."""

    preempted: bool  # stop the attempt here: a notice reached some rank before the run's last step
    to_log: dict[str, float]  # how long the loop stood still for a save, if it saved


class Checkpointer:
    def __init__(self, transfers: Transfers, *, policy: SavePolicy, keep: int,
                 extra_tensors: Callable[[], dict[str, Optional[dict]]] = dict, seed: int = 0):
        """`transfers` moves the files (made first, to prefetch a resumed attempt's checkpoint); `extra_tensors`
        is asked at every save (on every rank) for small modules to store beside the checkpoint as safetensors
        (name → state dict on rank 0); `seed` derives the RNG of ranks resumed from a checkpoint of another world
        size."""
        self.transfers, self.policy, self.keep, self.seed = transfers, policy, keep, seed
        self.extra_tensors = extra_tensors
        self.store, self.run_id, self.ranks = transfers.store, transfers.run_id, transfers.ranks
        self.local_dir, self.stored = transfers.local_dir, transfers.stored
        self._states: dict[str, Stateful] = {}
        self.best: Optional[dict] = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.attempt = runtime.shared_token()  # the same on every rank, new at every (re)start
        self.failure: Optional[BaseException] = None  # the first upload that failed after its retries

    # --- the end of a step -----------------------------------------------------------------------------------

    def end_step(self, engine, step: int, *, metrics: dict, final: bool, preempted: bool) -> StepEnd:
        """Every rank at the end of every step, with the same arguments but `preempted` (this rank's notice):
        whether any rank got a preemption notice or saw an upload fail, agreed in one collective; the first
        checkpoint that cannot become durable stops the run (raised here, on every rank); then a save if the
        policy says so or a notice forces one."""
        preempted, store_failed, permanently = runtime.any_rank(
            preempted, self.failure is not None, self.failure is not None and is_permanent(self.failure))
        if store_failed:
            self._raise_failure(permanent=permanently)
        save_started = time.perf_counter()
        saved = self.maybe_save(engine, step, metrics=metrics, final=final, force=preempted)
        return StepEnd(preempted=preempted and not final,
                       to_log={"perf/checkpoint_stall_seconds": time.perf_counter() - save_started} if saved else {})

    def _raise_failure(self, *, permanent: bool) -> None:
        """Stop the run because some rank's upload failed (`permanent`: as agreed across ranks)."""
        what = (f"checkpoint upload to {self.store.uri} failed: {store_failure(self.failure)}" if self.failure
                else f"a checkpoint upload of another rank to {self.store.uri} failed")
        if permanent:
            raise ConfigurationError(f"train.checkpoint.uri: {what}")
        raise UploadFailed(what) from self.failure

    # --- policy and state ------------------------------------------------------------------------------------

    def register(self, **states: Stateful) -> None:
        """Parts of the run saved in every checkpoint under their name and restored by `resume`."""
        self._states.update(states)

    def maybe_save(self, engine, step: int, *, metrics: Optional[dict] = None, final: bool = False,
                   force: bool = False) -> bool:
        """Save if the policy says so (all ranks call this with the same arguments); True if it saved."""
        improved = bool(metrics) and self.policy.improves(metrics, self.best)
        if improved:
            self.best = {"step": step, "value": metrics[self.policy.best_metric]}
        if not (final or force or improved or step % self.policy.every_steps == 0):
            return False
        state = {name: stateful.state_dict() for name, stateful in self._states.items()}
        state.update(best=self.best, run_id=self.run_id, world_size=self.ranks.world_size)
        self.save(engine, step, state, final=final, best=improved, metrics=metrics, extra_tensors=self.extra_tensors())
        return True

    def prepare_snapshots(self, engine) -> None:
        """Reserve the host memory of the next save's snapshot on the upload thread (after the first step, when
        the optimizer state exists); the save waits for it as for an upload."""
        future = self._pool.submit(snapshotting(engine).reserve(engine))
        with self._lock:
            self._pending.append(future)

    def resume(self, engine) -> int:
        """Restore the newest complete checkpoint into the engine and every registered part; the step it holds
        (0 when the run has none yet); a prefetched one's files are on local disk already."""
        newest = self.transfers.newest()
        if newest is None:
            return 0
        state = self.restore(engine, newest)
        self.best = state["best"]
        for name, stateful in self._states.items():
            stateful.load_state_dict(state[name])
        return newest.step

    # --- save ------------------------------------------------------------------------------------------------

    def save(self, engine, step: int, trainer_state: dict, *, final: bool = False, best: bool = False,
             metrics: Optional[dict] = None, extra_tensors: Optional[dict[str, Optional[dict]]] = None) -> Future:
        """Snapshot this rank's part (all ranks call this) and queue the writing of its files and their upload;
        returns once the snapshot is in host memory. A save waits for the one before it to be written and
        uploaded first: never two in flight per rank (nor two snapshots in memory).

        `extra_tensors` (name → state dict, filled on rank 0) are written beside it as NAME.safetensors."""
        tag = layout.step_tag(step)
        step_dir = self.local_dir / tag
        self._wait_everywhere()
        writer = snapshotting(engine)
        writer.begin()
        engine.save_checkpoint(str(self.local_dir), tag=tag, client_state={}, save_latest=False)
        write_files = writer.take_writes()
        torch.save(runtime.rng_state(), step_dir / f"rng-rank-{self.ranks.rank:05d}.pt")
        if self.ranks.is_main:
            from safetensors.torch import save_file

            (step_dir / layout.TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
            for name, tensors in (extra_tensors or {}).items():
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(step_dir / f"{name}.safetensors"))
        runtime.barrier()  # every rank has its snapshot before any rank trains on
        future = self._pool.submit(self._write_and_upload, write_files, step, step_dir, final, best,
                                   dict(metrics or {}))
        with self._lock:
            self._pending.append(future)
        return future

    def _wait_everywhere(self, poll: float = 0.5) -> None:
        """Until no rank has a save in flight. Polled with a short all-reduce rather than waited for in
        DeepSpeed's barrier: one rank's slow upload must not hold the others in a collective past its timeout."""
        while True:
            with self._lock:
                pending = list(self._pending)
            futures.wait(pending, timeout=poll)  # this rank's own: no collective while it waits
            busy = any(not future.done() for future in pending)
            (anyone_busy,) = runtime.any_rank(busy)
            if not anyone_busy:
                return
            if not busy:
                time.sleep(poll)  # another rank's upload: ask again in a moment

    def _owns(self, relative: Path) -> bool:
        owner = layout.owner_rank(str(relative))
        return owner == self.ranks.rank if owner is not None else self.ranks.is_main

    def _write_and_upload(self, write_files: Callable[[], None], step: int, step_dir: Path, final: bool,
                          best: bool, metrics: dict) -> None:
        """On the upload thread: the snapshot's files to local disk (a rank writes only files it owns), then
        to the store."""
        try:
            write_files()
            files = [p for p in sorted(step_dir.rglob("*")) if p.is_file() and self._owns(p.relative_to(step_dir))]
            self._upload_step(step, step_dir, files, final, best, metrics)
        except Exception as exc:
            if self.failure is None:  # read by the loop at the next step, without waiting for the upload
                self.failure = exc
            raise

    def _upload_step(self, step: int, step_dir: Path, files: list[Path], final: bool, best: bool,
                     metrics: dict) -> None:
        prefix = layout.step_prefix(self.run_id, step)
        entries = []
        meter = self.transfers.meter("upload", step, sum(path.stat().st_size for path in files))
        for path in files:
            relative = str(path.relative_to(step_dir))
            self._retry(lambda: self.store.put_file(path, prefix + relative, progress=meter),
                        f"upload {prefix}{relative}")
            entries.append(FileEntry(relative, path.stat().st_size, layout.sha256_of(path)))
        self.transfers.count("upload", meter)
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
        return self.transfers.retry(action, what)

    def _prune_local(self, before: int) -> None:
        """Local disk holds only what is not yet safely in the store; never another rank's files."""
        for step_dir in self.local_dir.glob("step-*"):
            step = layout.step_of(step_dir.name)
            if step is None or step >= before:
                continue
            for path in _files_in(step_dir):
                if self._owns(path.relative_to(step_dir)):
                    path.unlink(missing_ok=True)
            if self.ranks.local_rank == 0 and not _files_in(step_dir):
                shutil.rmtree(step_dir, ignore_errors=True)

    def publish_directory(self, directory: Path, name: str) -> None:
        publish_directory(self.stored, directory, name, retry=self._retry)

    def mark_complete(self, step: int) -> None:
        """The last write of a run (rank 0): everything after the final checkpoint is done."""
        marker = json.dumps({"step": step}).encode()
        self._retry(lambda: self.store.put_bytes(marker, f"{self.run_id}/{layout.RUN_COMPLETE}"), "mark complete")

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
            if is_permanent(errors[0]):
                raise ConfigurationError(f"train.checkpoint.uri: checkpoint upload to {self.store.uri} failed: "
                                         f"{store_failure(errors[0])}") from None
            raise UploadFailed(f"{len(errors)} checkpoint upload(s) failed: {errors[0]}") from errors[0]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- what is in the store --------------------------------------------------------------------------------

    def complete_steps(self) -> list[int]:
        return self.stored.complete_steps()

    def manifest(self, step: int) -> Manifest:
        return self.stored.manifest(step)

    def best_step(self) -> Optional[int]:
        return self.stored.best_step()

    def apply_retention(self, final_step: Optional[int] = None) -> list[int]:
        return apply_retention(self.stored, keep=self.keep, retry=self._retry, final_step=final_step)

    # --- restore ---------------------------------------------------------------------------------------------

    def fetch(self, manifest: Manifest) -> Path:
        """This rank's files of a complete checkpoint on local disk, on every rank before any goes on."""
        step_dir = self.transfers.download(manifest)
        runtime.barrier()
        return step_dir

    def restore(self, engine, manifest: Manifest) -> dict:
        """Weights, optimizer, scheduler, this rank's RNG; returns the trainer state saved with them. From a
        checkpoint of another world size: resharded (ZeRO 1–3 through DeepSpeed's universal format, which the
        engine was built to load), the RNG derived from (seed, step, rank)."""
        step_dir = self.fetch(manifest)
        tag = layout.step_tag(manifest.step)
        load_dir = self.local_dir
        resharded = manifest.world_size != self.ranks.world_size
        if _needs_universal(manifest, self.ranks.world_size):
            load_dir = self.local_dir / UNIVERSAL_DIR
            if self.ranks.local_rank == 0:
                shutil.rmtree(load_dir / tag, ignore_errors=True)
                elastic.to_universal(step_dir, load_dir / tag)
            runtime.barrier()
        load_path, _ = engine.load_checkpoint(str(load_dir), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load {load_dir / tag}")
        state = json.loads((step_dir / layout.TRAINER_STATE).read_text())
        if not resharded:
            runtime.restore_rng_state(torch.load(step_dir / f"rng-rank-{self.ranks.rank:05d}.pt",
                                                 weights_only=False))
            return state
        log.warning("resumed step %d written by %d ranks on %d: state resharded", manifest.step,
                    manifest.world_size, self.ranks.world_size)
        elastic.reseed_rank(self.seed, manifest.step, self.ranks.rank)
        runtime.barrier()  # every rank has loaded: the node's copies of other world sizes' files can go
        if self.ranks.local_rank == 0:
            shutil.rmtree(step_dir, ignore_errors=True)
            shutil.rmtree(self.local_dir / UNIVERSAL_DIR, ignore_errors=True)
        return state

    def verify(self, step: int) -> None:
        """The run succeeds only if its checkpoint is complete in the store with every size as written."""
        if step not in self.complete_steps():
            raise UploadFailed(f"checkpoint step {step} is not complete in {self.store.uri}")
        prefix = layout.step_prefix(self.run_id, step)
        for entry in self.manifest(step).files:
            if self.store.size(prefix + entry.path) != entry.size:
                raise UploadFailed(f"{prefix}{entry.path}: size in the store differs from the manifest")


def publish_directory(stored: StoredRun, directory: Path, name: str, *, retry: Callable) -> None:
    """Upload a directory (the final export) under `<run id>/<name>/` and check every size arrived."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = f"{stored.run_id}/{name}/{path.relative_to(directory)}"
        retry(lambda: stored.store.put_file(path, key), f"upload {key}")
        if stored.store.size(key) != path.stat().st_size:
            raise UploadFailed(f"{key}: size in the store differs from the local file")


def apply_retention(stored: StoredRun, *, keep: int, retry: Callable, final_step: Optional[int] = None) -> list[int]:
    """Retention over a run's complete checkpoints (`retry(action, what)`: under the store's retries), then the
    debris of killed attempts: a step older than the newest complete one that never got its manifest can no
    longer complete (attempts run one at a time and save in step order; a resumed attempt that reaches that step
    again writes it anew), so its files go. Returns the steps deleted."""
    store, run_id = stored.store, stored.run_id
    listed = retry(lambda: store.list(f"{run_id}/"), "list checkpoints")
    complete, keys_by_step = steps_in(listed)
    for step, keys in sorted(keys_by_step.items()):
        if complete and step < complete[-1] and step not in complete:
            retry(lambda: store.delete(keys), f"delete incomplete step {step}")
    best = retry(stored.best_step, "read best pointer")
    finals = {s for s in complete if s == final_step}
    doomed = checkpoints_to_delete(complete, keep=keep, best=best, final=finals)
    deleted = []
    for step in doomed:
        if retry(lambda: stored.manifest(step), f"read manifest of step {step}").final:
            continue  # a final checkpoint is kept even when it is no longer the newest
        prefix = layout.step_prefix(run_id, step)
        manifest = prefix + layout.MANIFEST
        # The manifest goes first: a crash mid-delete leaves an incomplete (ignored) checkpoint.
        retry(lambda: store.delete([manifest]), f"delete {prefix}")
        rest = [key for key in keys_by_step[step] if key != manifest]
        retry(lambda: store.delete(rest), f"delete {prefix}")
        deleted.append(step)
    return deleted


def _files_in(directory: Path) -> list[Path]:
    """The files under a local step directory; none once it is gone, also when local rank 0 removes it while this
    rank looks (every rank prunes on its own upload thread)."""
    try:
        return [path for path in directory.rglob("*") if path.is_file()]
    except FileNotFoundError:
        return []


def _needs_universal(manifest: Manifest, world_size: int) -> bool:
    return manifest.world_size != world_size and elastic.has_zero_shards(e.path for e in manifest.files)
