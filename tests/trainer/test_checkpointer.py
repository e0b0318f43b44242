"""The Checkpointer with a real DeepSpeed engine (one process, world size 1, ZeRO-2 on CPU) against a local
directory and S3 (moto's server): what lands in the store, in which order, what retention leaves, and what a
restart on an empty disk gets back."""

from __future__ import annotations

import errno
import hashlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from spottrain import runtime
from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain.checkpoint.checkpointer import Checkpointer, SavePolicy, Transfers, UploadFailed
from spottrain_contract.store import FAULTS_ENV, LocalDirStore, S3Store

PROJECT = Path(__file__).resolve().parents[2]
RUN = "run"


# --- a real engine ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks() -> runtime.Ranks:
    """torch.distributed (gloo) with this process as the only rank, through spottrain's own init."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(_free_port())}.items():
            patch.setenv(name, value)
        ranks = runtime.init_distributed()
        yield ranks
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def train_config():
    from spottrain_contract.recipe import load_recipe

    loaded = load_recipe("baseline", project_dir=PROJECT, profile="local",
                         overrides=["train.deepspeed.zero_stage=2", "train.deepspeed.precision=fp32"])
    return loaded.recipe.train


@pytest.fixture
def engine(ranks, train_config):
    from spottrain.engine import build_engine

    torch.manual_seed(0)
    return build_engine(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)), train_config,
                        ranks.world_size, total_steps=100)


def _train_step(engine) -> None:
    """One optimizer step (every micro-batch of the accumulation): the weights change."""
    for _ in range(engine.gradient_accumulation_steps()):
        loss = engine(torch.randn(engine.train_micro_batch_size_per_gpu(), 8, device=engine.device)).pow(2).mean()
        engine.backward(loss)
        engine.step()


def _weights(engine) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in engine.module.state_dict().items()}


# --- stores that record what the checkpointer asks of them -----------------------------------------------------

class Recording:
    """Mixed into a real store: records ("put", key) when a write starts, ("stored", key) when it returned,
    and ("get", key) for every file download."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str]] = []

    def put_file(self, local, key, progress=None):
        self.calls.append(("put", key))
        super().put_file(local, key, progress)
        self.calls.append(("stored", key))

    def put_bytes(self, data, key):
        self.calls.append(("put", key))
        super().put_bytes(data, key)
        self.calls.append(("stored", key))

    def get_file(self, key, local, progress=None):
        self.calls.append(("get", key))
        super().get_file(key, local, progress)

    def downloads(self) -> list[str]:
        return [key for what, key in self.calls if what == "get"]


class RecordingLocalDirStore(Recording, LocalDirStore):
    pass


class RecordingS3Store(Recording, S3Store):
    pass


@pytest.fixture(params=["local", "s3"])
def new_store(request, tmp_dirs):
    """new_store() -> a recording store on the same location each call (a restarted job's fresh client)."""
    if request.param == "local":
        root = str(tmp_dirs("store"))
        return lambda: RecordingLocalDirStore(root)
    bucket = request.getfixturevalue("s3_bucket")
    return lambda: RecordingS3Store(bucket.uri, endpoint_url=bucket.endpoint_url)


@pytest.fixture
def store(new_store):
    return new_store()


@pytest.fixture
def checkpointer(ranks, tmp_dirs):
    """checkpointer(store, keep=3, run_id=RUN, local_root=None, policy=every 4 steps, prefetch=False,
    progress_every=10.0) -> a Checkpointer on a new local disk (its Transfers prefetching, when asked, from the
    start)."""
    made = []

    def make(store, *, keep: int = 3, run_id: str = RUN, local_root: Path | None = None,
             policy: SavePolicy = SavePolicy(every_steps=4), prefetch: bool = False,
             progress_every: float = 10.0) -> Checkpointer:
        transfers = Transfers(store, local_root or tmp_dirs("local"), run_id, ranks, progress_every=progress_every)
        if prefetch:
            transfers.prefetch()
        made.append(Checkpointer(transfers, policy=policy, keep=keep))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _save(checkpoints, engine, steps, *, best=(), final=None, train=False) -> None:
    for step in steps:
        if train:
            _train_step(engine)
        checkpoints.save(engine, step, {"step": step, "best": None}, best=step in best, final=step == final,
                         metrics={"val/loss": 1.0 / step})
    checkpoints.wait()


def _step_keys(store, step: int, run_id: str = RUN) -> list[str]:
    return store.list(layout.step_prefix(run_id, step))


# --- what a save leaves in the store ---------------------------------------------------------------------------

def test_manifest_lists_every_file_the_step_wrote(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])

    step_dir = checkpoints.local_dir / layout.step_tag(1)
    written = sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file())

    assert [entry.path for entry in checkpoints.manifest(1).files] == written
    assert {"mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "rng-rank-00000.pt",
            layout.TRAINER_STATE} <= set(written)


def test_every_manifest_entry_matches_the_stored_size_and_sha256(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])
    prefix = layout.step_prefix(RUN, 1)

    for entry in checkpoints.manifest(1).files:
        stored = store.get_bytes(prefix + entry.path)
        assert (len(stored), hashlib.sha256(stored).hexdigest()) == (entry.size, entry.sha256), entry.path


def test_a_step_in_the_store_holds_its_files_its_part_list_and_its_manifest(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])
    prefix = layout.step_prefix(RUN, 1)

    expected = {prefix + e.path for e in checkpoints.manifest(1).files}
    expected |= {f"{prefix}{layout.PARTS}/rank-00000.json", prefix + layout.MANIFEST}
    assert set(_step_keys(store, 1)) == expected


def test_manifest_records_step_world_size_final_flag_and_metrics(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [4], final=4)

    manifest = checkpoints.manifest(4)

    assert (manifest.step, manifest.world_size, manifest.final, manifest.metrics) == (4, 1, True, {"val/loss": 0.25})


def test_manifest_is_written_after_every_other_file_of_its_step(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1, 2, 3], best={2})

    for step in (1, 2, 3):
        prefix = layout.step_prefix(RUN, step)
        manifest_started = store.calls.index(("put", prefix + layout.MANIFEST))
        others_stored = [i for i, (what, key) in enumerate(store.calls)
                         if what == "stored" and key.startswith(prefix) and not key.endswith(layout.MANIFEST)]
        assert len(others_stored) == len(checkpoints.manifest(step).files) + 1  # the files and the part list
        assert max(others_stored) < manifest_started


def test_best_pointer_is_written_after_the_manifest_of_its_step(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1, 2], best={2})

    manifest_stored = store.calls.index(("stored", layout.step_prefix(RUN, 2) + layout.MANIFEST))
    pointer_started = store.calls.index(("put", f"{RUN}/{layout.BEST_POINTER}"))

    assert manifest_stored < pointer_started


def test_extra_tensors_are_saved_as_safetensors_in_the_checkpoint(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    head = {"weight": torch.arange(6.0).reshape(2, 3)}
    checkpoints.save(engine, 1, {"step": 1}, extra_tensors={"value_head": head})
    checkpoints.wait()

    from safetensors.torch import load

    stored = load(store.get_bytes(layout.step_prefix(RUN, 1) + "value_head.safetensors"))
    assert torch.equal(stored["weight"], head["weight"])


def test_local_disk_keeps_only_the_newest_step_once_uploaded(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1, 2, 3])

    assert sorted(p.name for p in checkpoints.local_dir.glob("step-*")) == [layout.step_tag(3)]


# --- what counts as complete -----------------------------------------------------------------------------------

def test_a_step_without_a_manifest_is_not_complete(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1, 2])

    store.delete([layout.step_prefix(RUN, 2) + layout.MANIFEST])  # as if the job died before writing it

    assert checkpoints.complete_steps() == [1]


def test_an_incomplete_step_older_than_a_complete_one_is_deleted_and_a_newer_one_is_left(store, checkpointer,
                                                                                          engine):
    checkpoints = checkpointer(store, keep=5)
    _save(checkpoints, engine, [1, 2])
    store.delete([layout.step_prefix(RUN, 2) + layout.MANIFEST])  # a killed attempt's step 2, never completed
    checkpoints.apply_retention()
    assert _step_keys(store, 2), "newer than every complete step: it may still be in flight"

    _save(checkpoints, engine, [3])  # the resumed attempt's next complete step

    assert checkpoints.complete_steps() == [1, 3]
    assert _step_keys(store, 2) == []


def test_verify_fails_for_a_step_that_is_not_complete(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])

    with pytest.raises(UploadFailed, match="checkpoint step 2 is not complete"):
        checkpoints.verify(2)


def test_verify_fails_when_a_stored_file_has_the_wrong_size(store, checkpointer, engine):
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])
    checkpoints.verify(1)
    damaged = layout.step_prefix(RUN, 1) + "rng-rank-00000.pt"
    store.put_bytes(store.get_bytes(damaged)[:-1], damaged)

    with pytest.raises(UploadFailed, match=f"{damaged}: size in the store differs from the manifest"):
        checkpoints.verify(1)


class PartListingFailsOnce(LocalDirStore):
    """A real local store whose first listing of a step's part lists fails, as one network blip would."""

    failed = False

    def list(self, prefix):
        if f"/{layout.PARTS}/" in prefix and not self.failed:
            self.failed = True
            raise OSError("connection reset by peer")
        return super().list(prefix)


def test_a_transient_error_while_gathering_part_lists_does_not_lose_the_checkpoint(checkpointer, engine, tmp_dirs):
    checkpoints = checkpointer(PartListingFailsOnce(str(tmp_dirs("store"))))
    checkpoints.save(engine, 1, {"step": 1})
    checkpoints.wait()

    assert checkpoints.complete_steps() == [1]


class DeleteFailsOnce(LocalDirStore):
    """A real local store whose first delete fails, as one network blip would."""

    failed = False

    def delete(self, keys):
        if not self.failed:
            self.failed = True
            raise OSError("connection reset by peer")
        super().delete(keys)


def test_a_transient_error_while_applying_retention_is_retried(checkpointer, engine, tmp_dirs):
    checkpoints = checkpointer(DeleteFailsOnce(str(tmp_dirs("store"))), keep=1)
    _save(checkpoints, engine, [1, 2])

    assert checkpoints.complete_steps() == [2]


# --- retention -------------------------------------------------------------------------------------------------

def test_retention_keeps_the_newest_keep_complete_checkpoints(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=2)
    _save(checkpoints, engine, [1, 2, 3, 4, 5])

    assert checkpoints.complete_steps() == [4, 5]
    assert [step for step in (1, 2, 3) if _step_keys(store, step)] == []  # files and part lists too


def test_best_checkpoint_survives_retention(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=2)
    _save(checkpoints, engine, [1, 2, 3, 4, 5], best={2})

    assert checkpoints.complete_steps() == [2, 4, 5]


def test_best_pointer_names_the_best_step_and_its_metrics(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=2)
    _save(checkpoints, engine, [1, 2, 3, 4, 5], best={2})

    assert json.loads(store.get_bytes(f"{RUN}/{layout.BEST_POINTER}")) == {"step": 2, "metrics": {"val/loss": 0.5}}
    assert checkpoints.best_step() == 2


def test_a_newer_best_hands_the_old_best_over_to_retention(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=1)
    _save(checkpoints, engine, [1, 2, 3, 4, 5], best={1, 3})

    assert checkpoints.complete_steps() == [3, 5]


def test_final_checkpoint_is_kept_beside_the_newest_intermediates(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=1)
    _save(checkpoints, engine, [1, 2, 3, 4], final=4)

    assert checkpoints.complete_steps() == [3, 4]
    assert checkpoints.manifest(4).final


def test_final_checkpoint_survives_later_saves(store, checkpointer, engine):
    checkpoints = checkpointer(store, keep=1)
    _save(checkpoints, engine, [1, 2], final=2)
    _save(checkpoints, engine, [3, 4])

    assert checkpoints.complete_steps() == [2, 4]


def test_retention_leaves_another_runs_prefix_untouched(store, checkpointer, engine):
    other = checkpointer(store, run_id=f"{RUN}-2", keep=5)  # a run whose id extends this one's
    _save(other, engine, [1, 2, 3])
    before = {key: store.get_bytes(key) for key in store.list(f"{RUN}-2/")}

    _save(checkpointer(store, keep=1), engine, [1, 2, 3, 4])

    assert {key: store.get_bytes(key) for key in store.list(f"{RUN}-2/")} == before
    assert other.complete_steps() == [1, 2, 3]


# --- restore ---------------------------------------------------------------------------------------------------

def test_restore_on_an_empty_local_disk_loads_the_saved_weights_bitwise(new_store, checkpointer, engine):
    writer = checkpointer(new_store())
    _save(writer, engine, [1, 2], train=True)
    saved = _weights(engine)
    _train_step(engine)
    assert any(not torch.equal(saved[k], v) for k, v in _weights(engine).items())  # training moved them

    restarted = checkpointer(new_store())  # a new job: new client, new empty local disk
    newest = restarted.complete_steps()[-1]
    state = restarted.restore(engine, restarted.manifest(newest))

    assert state == {"step": 2, "best": None}
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())


def test_restore_on_an_empty_local_disk_downloads_every_file_of_the_checkpoint(new_store, checkpointer, engine):
    _save(checkpointer(new_store()), engine, [1])
    store = new_store()
    restarted = checkpointer(store)

    restarted.restore(engine, restarted.manifest(1))

    assert sorted(store.downloads()) == sorted(layout.step_prefix(RUN, 1) + e.path for e in restarted.manifest(1).files)


def test_restore_reuses_verified_local_copies_without_downloading(new_store, checkpointer, engine, tmp_dirs):
    local_root = tmp_dirs("local")
    _save(checkpointer(new_store(), local_root=local_root), engine, [1])
    store = new_store()
    restarted = checkpointer(store, local_root=local_root)  # the same machine after a restart

    restarted.restore(engine, restarted.manifest(1))

    assert store.downloads() == []


def test_restore_replaces_a_corrupted_local_copy_from_the_store(new_store, checkpointer, engine, tmp_dirs):
    local_root = tmp_dirs("local")
    _save(checkpointer(new_store(), local_root=local_root), engine, [1])
    saved = _weights(engine)
    damaged = local_root / RUN / layout.step_tag(1) / "mp_rank_00_model_states.pt"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    _train_step(engine)
    store = new_store()
    restarted = checkpointer(store, local_root=local_root)

    restarted.restore(engine, restarted.manifest(1))

    assert store.downloads() == [layout.step_prefix(RUN, 1) + "mp_rank_00_model_states.pt"]
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())


def test_a_checkpoint_of_another_world_size_is_fetched_whole_to_be_resharded(store, checkpointer, engine):
    """Written by 4 ranks (so the manifest says), resumed by this one: every file comes, the other ranks' shards
    included, and the engine must load DeepSpeed's universal format (the ZeRO-2 shards are resharded)."""
    checkpoints = checkpointer(store)
    _save(checkpoints, engine, [1])
    assert not checkpoints.transfers.loads_universal()
    key = layout.step_prefix(RUN, 1) + layout.MANIFEST
    store.put_bytes(store.get_bytes(key).replace(b'"world_size": 1', b'"world_size": 4'), key)
    restarted = checkpointer(store)
    manifest = restarted.manifest(1)

    assert restarted.transfers.loads_universal()
    step_dir = restarted.fetch(manifest)
    assert sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file()) == sorted(
        e.path for e in manifest.files)


# --- under injected S3 faults ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_checkpoints_saved_under_injected_s3_errors_are_complete_and_restore_bitwise(
        seed, monkeypatch, s3_bucket, checkpointer, engine):
    monkeypatch.setenv(FAULTS_ENV, f"error=0.3,delay=0:0.02,seed={seed}")
    store = S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url)
    writer = checkpointer(store, keep=2)
    _save(writer, engine, [1, 2, 3], best={1}, train=True)
    saved = _weights(engine)
    _train_step(engine)

    restarted = checkpointer(S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url))
    restarted.verify(3)
    restarted.restore(engine, restarted.manifest(3))

    assert store.faults.errors_injected > 0
    assert restarted.complete_steps() == [1, 2, 3]
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())


# --- the save policy and the registered state ------------------------------------------------------------------

class Counter:
    """A stateful part of a run, as the loop position or a task's running statistics are."""

    def __init__(self, value: int = 0):
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def _policy_checkpointer(checkpointer, store, **policy):
    return checkpointer(store, policy=SavePolicy(**{"every_steps": 4, **policy}))


@pytest.mark.parametrize("new_store", ["local"], indirect=True)
def test_the_policy_saves_every_n_steps_at_a_new_best_when_forced_and_at_the_end(store, checkpointer, engine):
    checkpoints = _policy_checkpointer(checkpointer, store)
    evaluations = {3: {"val/loss": 2.0}, 5: {"val/loss": 3.0}, 6: {"val/loss": 1.0}}
    saved = [step for step in range(1, 11)
             if checkpoints.maybe_save(engine, step, metrics=evaluations.get(step), force=step == 7,
                                       final=step == 10)]
    checkpoints.wait()
    assert saved == [3, 4, 6, 7, 8, 10]  # 3 and 6: new bests; 5 is worse; 7 forced; 10 final
    assert checkpoints.best_step() == 6
    assert checkpoints.manifest(10).final


@pytest.mark.parametrize("new_store", ["local"], indirect=True)
def test_a_metric_the_task_does_not_evaluate_is_named_at_the_first_evaluation(store, checkpointer, engine):
    checkpoints = _policy_checkpointer(checkpointer, store, best_metric="val/accuracy", best_mode="max")
    with pytest.raises(ValueError, match=r"^train.checkpoint.best_metric: 'val/accuracy' is not evaluated by this "
                                         r"task \(it reports val/loss\)"):
        checkpoints.maybe_save(engine, 1, metrics={"val/loss": 1.0})


def test_registered_parts_and_the_best_so_far_come_back_on_resume(new_store, checkpointer, engine):
    checkpoints = _policy_checkpointer(checkpointer, new_store())
    position, statistics = Counter(), Counter(41)
    checkpoints.register(loop=position, task=statistics)
    for step in range(1, 5):
        _train_step(engine)
        position.value, statistics.value = step, statistics.value + 1
        checkpoints.maybe_save(engine, step, metrics={"val/loss": 1.0 / step} if step == 2 else None)
    checkpoints.wait()
    saved = _weights(engine)
    _train_step(engine)

    restarted = _policy_checkpointer(checkpointer, new_store())  # a new attempt: fresh parts, empty local disk
    position, statistics = Counter(), Counter()
    restarted.register(loop=position, task=statistics)
    assert restarted.resume(engine) == 4
    assert (position.value, statistics.value, restarted.best) == (4, 45, {"step": 2, "value": 0.5})
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())


@pytest.mark.parametrize("new_store", ["local"], indirect=True)
def test_resume_without_a_checkpoint_starts_at_step_zero(store, checkpointer, engine):
    checkpoints = _policy_checkpointer(checkpointer, store)
    checkpoints.register(loop=Counter(7))
    assert checkpoints.resume(engine) == 0


# --- the end of a step ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("new_store", ["local"], indirect=True)
def test_a_preemption_notice_forces_a_save_and_stops_the_attempt_unless_at_the_runs_last_step(store, checkpointer,
                                                                                              engine):
    checkpoints = checkpointer(store)  # saves every 4 steps
    ended = {step: checkpoints.end_step(engine, step, metrics={}, final=step == 3, preempted=step >= 2)
             for step in (1, 2, 3)}
    checkpoints.wait()
    assert [ended[step].preempted for step in (1, 2, 3)] == [False, True, False]  # at step 3 the run finishes
    assert checkpoints.complete_steps() == [2, 3]
    assert [set(ended[step].to_log) for step in (1, 2, 3)] == [set(), *[{"perf/checkpoint_stall_seconds"}] * 2]


class FullDisk(LocalDirStore):
    """A store whose disk is full for every checkpoint file: a failure no retry heals."""

    def put_file(self, local, key, progress=None):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_that_cannot_become_durable_stops_the_run_at_the_next_step_end(tmp_dirs, checkpointer, engine):
    checkpoints = checkpointer(FullDisk(str(tmp_dirs("store"))))
    checkpoints.end_step(engine, 4, metrics={}, final=False, preempted=False)  # a save: its upload fails
    deadline = time.monotonic() + 60
    while checkpoints.failure is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ConfigurationError, match=r"^train.checkpoint.uri: checkpoint upload to .+ failed: OSError: "
                                                 r"\[Errno 28\] No space left on device$"):
        checkpoints.end_step(engine, 5, metrics={}, final=False, preempted=False)


# --- transfers a person can watch, retried only where nothing below retries ----------------------------------------

def test_a_resume_from_s3_logs_download_progress_and_totals(s3_bucket, checkpointer, engine, caplog):
    import logging

    _save(checkpointer(S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url)), engine, [1])
    # every callback: the figures, not the pace, are under test
    restarted = checkpointer(S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url), progress_every=0.0)
    with caplog.at_level(logging.INFO, logger="spottrain.transfers"):
        restarted.restore(engine, restarted.manifest(1))
    lines = [r.getMessage() for r in caplog.records if r.name == "spottrain.transfers"]
    total = sum(e.size for e in restarted.manifest(1).files)
    assert lines and all(line.startswith("checkpoint download step-00000001 (rank 0): ") for line in lines)
    assert any(" of " in line and "/s, ETA " in line for line in lines[:-1])
    assert " in " in lines[-1] and restarted.transfers.metrics()["transfer/download_bytes"] == total


class CorruptsFirstDownload(LocalDirStore):
    """A real directory store whose first download arrives damaged, as a flaky disk or network might deliver."""

    def __init__(self, root):
        super().__init__(root)
        self.downloads = []
        self.lock = threading.Lock()  # files download in parallel

    def get_file(self, key, local, progress=None):
        super().get_file(key, local, progress)
        with self.lock:
            self.downloads.append(key)
            damage = len(self.downloads) == 1
        if damage:
            local.write_bytes(b"damaged" + local.read_bytes()[7:])


def test_a_download_that_arrives_damaged_is_fetched_again(tmp_dirs, checkpointer, engine):
    root = str(tmp_dirs("store"))
    _save(checkpointer(LocalDirStore(root)), engine, [1], train=True)
    saved = _weights(engine)
    _train_step(engine)
    store = CorruptsFirstDownload(root)
    restarted = checkpointer(store)
    restarted.restore(engine, restarted.manifest(1))
    damaged = store.downloads[0]
    assert sorted(store.downloads) == sorted([damaged, *set(store.downloads)])  # it alone was fetched once more
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())


# --- asynchronous saves ----------------------------------------------------------------------------------------

def _contents(directory: Path) -> dict[str, list]:
    """Every checkpoint file as DeepSpeed would load it: each value in order (tensors by dtype, shape, stride,
    type, requires_grad and data) and which tensors share a storage. Not the bytes: DeepSpeed's default
    (legacy) torch.save format names storages by their memory address, so no two saves are byte-equal."""
    from torch.utils._pytree import tree_flatten

    contents = {}
    for path in sorted(directory.rglob("*.pt")):
        leaves, spec = tree_flatten(torch.load(path, weights_only=False, map_location="cpu"))
        storages: dict[int, int] = {}
        described = [(type(x).__name__, x.dtype, tuple(x.shape), x.stride(), x.storage_offset(), x.requires_grad,
                      x.tolist(), storages.setdefault(x.untyped_storage().data_ptr(), len(storages)))
                     if torch.is_tensor(x) else (type(x).__name__, repr(x)) for x in leaves]
        contents[str(path.relative_to(directory))] = [str(spec), *described]
    return contents


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_a_snapshot_written_after_more_training_holds_what_a_synchronous_save_holds(ranks, tmp_dirs, zero_stage):
    """The loop trains on while the files are written: they still hold the state of the step saved, exactly
    what DeepSpeed's own synchronous save writes (so resume reads them as it always did)."""
    from spottrain.checkpoint.snapshot import snapshotting
    from spottrain.engine import build_engine
    from spottrain_contract.recipe import load_recipe

    cfg = load_recipe("baseline", project_dir=PROJECT, profile="local",
                      overrides=[f"train.deepspeed.zero_stage={zero_stage}", "train.deepspeed.precision=fp32"])
    torch.manual_seed(0)
    engine = build_engine(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)), cfg.recipe.train,
                          ranks.world_size, total_steps=100)
    writer = snapshotting(engine)

    def synchronous_save() -> dict[str, list]:
        directory = tmp_dirs("synchronous")
        engine.checkpoint_engine = writer.inner  # DeepSpeed's own engine: torch.save in the loop
        engine.save_checkpoint(str(directory), tag="step", save_latest=False)
        engine.checkpoint_engine = writer
        return _contents(directory)

    for _ in range(2):  # the second save reuses the first one's host buffers
        _train_step(engine)
        expected = synchronous_save()
        directory = tmp_dirs("snapshot")
        writer.begin()
        engine.save_checkpoint(str(directory), tag="step", save_latest=False)
        write_files = writer.take_writes()
        assert not list(directory.rglob("*.pt"))  # the loop only copied the state
        _train_step(engine)  # weights and optimizer state change before the files are written
        write_files()
        assert _contents(directory) == expected


def test_a_save_waits_for_the_one_in_flight_before_taking_its_snapshot(checkpointer, engine, tmp_dirs):
    gate, uploading = threading.Event(), threading.Event()

    class HeldStore(LocalDirStore):
        """A local store whose first file upload waits until the test lets it go."""

        def put_file(self, path, key, progress=None):
            uploading.set()
            gate.wait(timeout=60)
            return super().put_file(path, key, progress=progress)

    checkpoints = checkpointer(HeldStore(str(tmp_dirs("held"))))
    checkpoints.save(engine, 1, {"step": 1, "best": None})  # returns with its upload held
    assert uploading.wait(timeout=60)
    second = threading.Thread(target=checkpoints.save, args=(engine, 2, {"step": 2, "best": None}))
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive(), "the second save went ahead while the first was still uploading"
    gate.set()
    second.join(timeout=60)
    checkpoints.wait()
    assert checkpoints.complete_steps() == [1, 2]


def test_host_memory_reserved_after_the_first_step_leaves_the_save_only_a_copy(ranks, engine, tmp_dirs):
    from spottrain.checkpoint.snapshot import snapshotting

    _train_step(engine)  # the optimizer state exists
    writer = snapshotting(engine)
    writer.reserve(engine)()
    writer.begin()
    engine.save_checkpoint(str(tmp_dirs("snapshot")), tag="step", save_latest=False)
    writer.take_writes()()
    assert writer.allocated_in_loop == 0


class CountsDownloads(LocalDirStore):
    def __init__(self, root):
        super().__init__(root)
        self.downloads = []

    def get_file(self, key, local, progress=None):
        self.downloads.append(key)
        return super().get_file(key, local, progress)


def test_a_prefetched_checkpoint_restores_bitwise_and_is_fetched_and_checked_once(tmp_dirs, checkpointer, engine,
                                                                                  monkeypatch):
    from spottrain_contract import layout as layout_module

    root = str(tmp_dirs("store"))
    _save(checkpointer(LocalDirStore(root)), engine, [1, 2], train=True)
    saved = _weights(engine)
    _train_step(engine)
    store = CountsDownloads(root)
    restarted = checkpointer(store, prefetch=True)
    restarted.transfers.newest()  # the download is done before resume asks
    hashed = []
    original = layout_module.sha256_of
    monkeypatch.setattr(layout_module, "sha256_of", lambda path, *a: hashed.append(path) or original(path, *a))
    assert restarted.resume(engine) == 2
    assert all(torch.equal(saved[k], v) for k, v in _weights(engine).items())
    assert sorted(store.downloads) == sorted(set(store.downloads))  # each file once
    assert all(key.startswith(f"{RUN}/step-00000002/") for key in store.downloads)
    assert hashed == []  # verified as it arrived: not read again to resume
