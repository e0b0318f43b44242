"""SPOTTRAIN_S3_FAULTS: injected 500s and delays on a real S3 endpoint (moto's server) lose nothing."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spottrain_contract.store import FAULTS_ENV, S3_ATTEMPTS, S3Faults, S3Store, with_retries

MiB = 2**20


def _faulty_store(monkeypatch, bucket, spec: str, attempts: int = S3_ATTEMPTS) -> S3Store:
    monkeypatch.setenv(FAULTS_ENV, spec)
    return S3Store(bucket.uri, endpoint_url=bucket.endpoint_url, attempts=attempts)


def test_a_fault_spec_sets_error_rate_delay_range_and_seed(monkeypatch, s3_bucket):
    store = _faulty_store(monkeypatch, s3_bucket, "error=0.2, delay=0.05:0.3, seed=7")

    assert (store.faults.error, store.faults.delay, store.faults.seed) == (0.2, (0.05, 0.3), 7)


def test_a_single_delay_value_is_a_fixed_delay():
    assert S3Faults.parse("delay=0.1").delay == (0.1, 0.1)


@pytest.mark.parametrize("spec", ["", "   "])
def test_an_empty_fault_spec_injects_nothing(monkeypatch, s3_bucket, spec):
    assert _faulty_store(monkeypatch, s3_bucket, spec).faults is None


@pytest.mark.parametrize("spec", ["error=2", "error=-0.1", "error=lots", "delay=0.3:0.1", "delay=-1", "delay=inf",
                                  "seed=x", "errors=0.1", "error", "error=0.1,error=0.2", "0.2"])
def test_an_invalid_fault_spec_is_refused_naming_the_variable_and_format(monkeypatch, s3_bucket, spec):
    with pytest.raises(ValueError) as raised:
        _faulty_store(monkeypatch, s3_bucket, spec)

    assert FAULTS_ENV in str(raised.value)
    assert "error=P,delay=LO:HI,seed=N" in str(raised.value)


def test_injected_delay_slows_every_request(monkeypatch, s3_bucket):
    store = _faulty_store(monkeypatch, s3_bucket, "delay=0.05:0.06")
    started = time.monotonic()

    for i in range(4):
        store.put_bytes(b"x", f"run/{i}")

    assert time.monotonic() - started >= 4 * 0.05
    assert store.faults.errors_injected == 0


def test_an_error_on_every_request_reaches_the_caller_as_internal_error(monkeypatch, s3_bucket):
    from botocore.exceptions import ClientError

    store = _faulty_store(monkeypatch, s3_bucket, "error=1", attempts=3)  # fails fast: every attempt is a 500

    with pytest.raises(ClientError) as raised:
        store.put_bytes(b"x", "run/a")

    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert store.faults.errors_injected > 1  # botocore retried before giving up


def test_the_same_seed_injects_the_same_errors(monkeypatch, s3_bucket):
    counts = []
    for _ in range(2):
        store = _faulty_store(monkeypatch, s3_bucket, "error=0.3,seed=11")
        for i in range(6):
            store.put_bytes(b"x", f"run/{i}")  # one thread: the draws happen in the same order
        counts.append(store.faults.errors_injected)

    assert counts[0] == counts[1] > 0


def test_files_uploaded_and_downloaded_under_injected_errors_arrive_byte_identical(monkeypatch, s3_bucket, tmp_dirs):
    store = _faulty_store(monkeypatch, s3_bucket, "error=0.3,delay=0:0.02,seed=5")
    source, target = tmp_dirs("src"), tmp_dirs("dst")
    sizes = [10, 1000, 100_000, 1_000_000, 3 * MiB, 0, 77, 4096]
    for i, size in enumerate(sizes):
        (source / f"f{i}.bin").write_bytes(os.urandom(size))
    names = sorted(p.name for p in source.iterdir())

    def upload(name):
        with_retries(lambda: store.put_file(source / name, f"run/step-00000001/{name}"), what=name, base_delay=0.05)

    def download(name):
        with_retries(lambda: store.get_file(f"run/step-00000001/{name}", target / name), what=name, base_delay=0.05)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(upload, names))
        listed = with_retries(lambda: store.list("run/"), what="list", base_delay=0.05)
        list(pool.map(download, names))

    assert store.faults.errors_injected > 0
    assert listed == [f"run/step-00000001/{name}" for name in names]
    for name in names:
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
