"""Which store failures no retry can heal, on real stores: such a failure propagates at once, a transient one is
retried, and a store that refuses writes is found by the probe before anything is built."""

from __future__ import annotations

import errno
import json
import time

import boto3
import pytest

from spottrain_contract.errors import ConfigurationError
from spottrain_contract.job import DO_NOT_RESTART_EXIT_CODE, progress_path
from spottrain_contract.store import (LocalDirStore, S3Store, StoreUnavailable, is_permanent, probe_store,
                                     store_failure, with_retries)
from tests.trainer.harness import TrainingRun

BOTOCORE_ATTEMPTS = 3  # fewer than production's, so a failure that must exhaust them arrives fast
REFUSING_DIR = "/sys/spottrain-store"  # sysfs refuses new files even to root: EPERM, like a read-only mount


def test_a_missing_bucket_is_permanent_and_not_retried(s3_endpoint):
    store = S3Store("s3://no-such-bucket/checkpoints", endpoint_url=s3_endpoint)
    calls = []

    def put():
        calls.append(1)
        store.put_bytes(b"x", "run/key")

    with pytest.raises(Exception) as raised:
        with_retries(put, what="put", base_delay=0.01)
    assert (is_permanent(raised.value), len(calls)) == (True, 1)
    assert store_failure(raised.value).startswith("NoSuchBucket: ")


def test_an_upload_into_a_missing_bucket_is_permanent_through_boto3s_wrapper(s3_endpoint, tmp_path):
    store = S3Store("s3://no-such-bucket/checkpoints", endpoint_url=s3_endpoint)
    (tmp_path / "shard.pt").write_bytes(b"w")
    with pytest.raises(Exception) as raised:
        store.put_file(tmp_path / "shard.pt", "run/shard.pt")
    assert type(raised.value).__name__ == "S3UploadFailedError" and is_permanent(raised.value)


def test_a_directory_that_refuses_writes_is_permanent():
    with pytest.raises(OSError) as raised:
        LocalDirStore(REFUSING_DIR).put_bytes(b"x", "run/key")
    assert raised.value.errno in (errno.EPERM, errno.EACCES, errno.EROFS) and is_permanent(raised.value)


def test_a_server_error_is_transient_and_retried_by_botocore_alone(monkeypatch, s3_bucket):
    monkeypatch.setenv("SPOTTRAIN_S3_FAULTS", "error=1.0,seed=1")
    store = S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url, attempts=BOTOCORE_ATTEMPTS)
    attempts = []
    with pytest.raises(Exception) as raised:
        with_retries(lambda: attempts.append(1) or store.put_bytes(b"x", "k"), what="put", attempts=3,
                     base_delay=0.01)
    assert (is_permanent(raised.value), len(attempts)) == (False, 1)
    assert store.faults.errors_injected >= BOTOCORE_ATTEMPTS  # botocore's attempts, each answered 500


def test_the_probe_stops_a_run_whose_store_refuses_writes():
    with pytest.raises(ConfigurationError) as raised:
        probe_store(LocalDirStore(REFUSING_DIR), "run", rank=0)
    assert str(raised.value).startswith(f"train.checkpoint.uri: cannot write to the checkpoint store {REFUSING_DIR} "
                                        f"(PermissionError: [Errno 1] Operation not permitted")


def test_the_probe_of_an_unreachable_endpoint_is_healable():
    store = S3Store("s3://bucket/checkpoints", endpoint_url="http://127.0.0.1:9", attempts=1)
    with pytest.raises(StoreUnavailable, match=r"^cannot write to the checkpoint store s3://bucket/checkpoints "
                                               r"\(EndpointConnectionError: "):
        probe_store(store, "run", rank=0)


def test_the_probe_leaves_nothing_behind(s3_bucket):
    store = S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url)
    probe_store(store, "run", rank=3)
    assert store.list("") == []
    assert boto3.client("s3", endpoint_url=s3_bucket.endpoint_url).list_objects_v2(
        Bucket=s3_bucket.name).get("KeyCount") == 0


def _delete_bucket(client, bucket: str) -> None:
    """Empty and delete a bucket while uploads may still land in it."""
    for _ in range(100):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        try:
            client.delete_bucket(Bucket=bucket)
            return
        except client.exceptions.ClientError:
            continue
    raise AssertionError(f"bucket {bucket} could not be deleted")


@pytest.mark.slow
def test_the_first_checkpoint_that_cannot_become_durable_stops_the_run_at_once(s3_bucket, tmp_path):

    run = TrainingRun("vanishing", tmp_path, ("train.max_steps=400", "train.epochs=40",
                                              "train.checkpoint.every_steps=2", f"train.checkpoint.uri={s3_bucket.uri}",
                                              f"train.checkpoint.endpoint_url={s3_bucket.endpoint_url}"))
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    process = run.start()
    try:
        deadline = time.monotonic() + 240
        while not any(o["Key"].endswith("MANIFEST.json") for o in client.list_objects_v2(
                Bucket=s3_bucket.name).get("Contents", [])):
            assert process.poll() is None and time.monotonic() < deadline, run.last_log()
            time.sleep(0.1)
        _delete_bucket(client, s3_bucket.name)  # the store goes away under the running job
        code = process.wait(timeout=240)
    finally:
        run._reap(process)
    step = json.loads(progress_path(run.local, "vanishing").read_text())["step"]
    assert (code, step < 400) == (DO_NOT_RESTART_EXIT_CODE, True), run.last_log()
    assert f"train.checkpoint.uri: checkpoint upload to {s3_bucket.uri} failed: NoSuchBucket" in run.last_log(
        whole=True)
