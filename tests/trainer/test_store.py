"""Both checkpoint stores (a local directory and S3 through moto's real server) keep the same promises."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from spottrain_contract.store import LocalDirStore, S3Store, open_store, with_retries

MiB = 2**20


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_dirs):
    if request.param == "local":
        return LocalDirStore(str(tmp_dirs("store")))
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket.uri, endpoint_url=bucket.endpoint_url)


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_put_file_then_get_file_returns_the_same_bytes(store, tmp_dirs):
    data = os.urandom(100_000)
    store.put_file(_file(tmp_dirs("src") / "shard.pt", data), "run/step-00000001/shard.pt")
    target = tmp_dirs("dst") / "deep" / "shard.pt"

    store.get_file("run/step-00000001/shard.pt", target)

    assert target.read_bytes() == data


def test_get_file_leaves_no_partial_file_beside_the_target(store, tmp_dirs):
    store.put_bytes(b"weights", "run/w.pt")
    target_dir = tmp_dirs("dst")

    store.get_file("run/w.pt", target_dir / "w.pt")

    assert sorted(p.name for p in target_dir.iterdir()) == ["w.pt"]


def test_put_bytes_then_get_bytes_returns_the_same_bytes(store):
    store.put_bytes(b'{"step": 3}', "run/BEST.json")

    assert store.get_bytes("run/BEST.json") == b'{"step": 3}'


def test_put_bytes_replaces_an_existing_object(store):
    store.put_bytes(b"old contents", "run/BEST.json")
    store.put_bytes(b"new", "run/BEST.json")

    assert store.get_bytes("run/BEST.json") == b"new"
    assert store.size("run/BEST.json") == 3


def test_get_bytes_of_a_missing_key_is_none(store):
    store.put_bytes(b"x", "run/present.json")

    assert store.get_bytes("run/absent.json") is None


def test_size_is_the_stored_length(store):
    store.put_bytes(b"12345", "run/a")

    assert store.size("run/a") == 5


def test_size_of_a_missing_key_is_none(store):
    store.put_bytes(b"x", "run/present")

    assert store.size("run/absent") is None


KEYS = ["run/step-00000002/b.pt", "run/step-00000001/a.pt", "run/step-00000001/_parts/rank-00000.json",
        "run/BEST.json", "run-2/step-00000001/a.pt", "other/x"]


def _put_all(store, keys=KEYS):
    for key in keys:
        store.put_bytes(key.encode(), key)


def test_list_returns_the_keys_under_a_prefix_sorted(store):
    _put_all(store)

    assert store.list("run/") == ["run/BEST.json", "run/step-00000001/_parts/rank-00000.json",
                                  "run/step-00000001/a.pt", "run/step-00000002/b.pt"]


def test_list_of_a_directory_prefix_excludes_a_run_whose_name_extends_it(store):
    _put_all(store)

    assert not [key for key in store.list("run/") if key.startswith("run-2/")]


def test_list_matches_keys_by_string_prefix_like_s3(store):
    _put_all(store)

    assert store.list("run/step-0000000") == ["run/step-00000001/_parts/rank-00000.json",
                                              "run/step-00000001/a.pt", "run/step-00000002/b.pt"]
    assert store.list("run") == sorted(k for k in KEYS if k.startswith("run"))


def test_list_of_an_unknown_prefix_is_empty(store):
    _put_all(store)

    assert store.list("nothing/") == []


def test_delete_removes_exactly_the_named_keys(store):
    _put_all(store)

    store.delete(["run/BEST.json", "run/step-00000002/b.pt", "run/never-existed"])

    assert store.list("") == sorted(set(KEYS) - {"run/BEST.json", "run/step-00000002/b.pt"})
    assert store.get_bytes("run/BEST.json") is None


def test_a_local_store_keeps_no_directory_its_deletes_emptied(tmp_dirs):
    root = tmp_dirs("store")
    store = LocalDirStore(str(root))
    store.put_bytes(b"{}", "run/step-00000001/_parts/rank-00000.json")
    store.put_bytes(b"w", "run/step-00000001/w.pt")
    store.put_bytes(b"{}", "run/BEST.json")
    store.delete(["run/step-00000001/_parts/rank-00000.json", "run/step-00000001/w.pt"])
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["run", "run/BEST.json"]


def test_a_local_store_keeps_a_runs_directory_when_its_last_file_goes(tmp_dirs):
    """Ranks share the store: a probe deleted by one rank must not take the run directory another is writing into."""
    root = tmp_dirs("store")
    store = LocalDirStore(str(root))
    store.put_bytes(b"probe", "run/.probe-rank-00001")
    store.delete(["run/.probe-rank-00001"])
    assert (root / "run").is_dir()


def test_a_local_store_read_while_retention_deletes_steps_sees_each_key_whole_or_not_at_all(tmp_dirs):
    """The hub lists a live run's checkpoints while its trainer writes steps and deletes old ones: a step removed
    between the listing and a read (or while the listing walks it) is absent, as on S3, never an error (it was a
    FileNotFoundError and a 400 on the Run page in CI)."""
    store = LocalDirStore(str(tmp_dirs("store")))
    files = ("a.pt", "b.pt", "_parts/rank-00000.json")
    stop = threading.Event()

    def train_with_retention():
        step = 0
        while not stop.is_set():
            for name in files:
                store.put_bytes(b"w", f"run/step-{step:08d}/{name}")
            store.delete([f"run/step-{step - 2:08d}/{name}" for name in files])
            step += 1

    trainer = threading.Thread(target=train_with_retention)
    trainer.start()
    try:
        for _ in range(300):
            for key in store.list("run/"):
                assert store.get_bytes(key) in (None, b"w")
                assert store.size(key) in (None, 1)
    finally:
        stop.set()
        trainer.join()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """70 MiB: above S3Store's 64 MiB multipart threshold."""
    return _file(tmp_path_factory.mktemp("big") / "optim.pt", os.urandom(70 * MiB))


def test_a_file_above_the_multipart_threshold_round_trips(store, big_file, tmp_dirs):
    store.put_file(big_file, "run/optim.pt")
    target = tmp_dirs("dst") / "optim.pt"

    store.get_file("run/optim.pt", target)

    assert store.size("run/optim.pt") == big_file.stat().st_size
    assert target.read_bytes() == big_file.read_bytes()


def test_a_file_above_the_multipart_threshold_is_stored_in_parts_on_s3(s3_bucket, big_file):
    store = S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url)
    store.put_file(big_file, "run/optim.pt")

    etag = store.client.head_object(Bucket=s3_bucket.name, Key=f"{s3_bucket.prefix}/run/optim.pt")["ETag"]

    assert etag.strip('"').endswith("-2")  # a multipart object's ETag counts its parts: 64 MiB + 6 MiB


def test_s3_keys_live_under_the_uri_prefix(s3_bucket):
    store = S3Store(s3_bucket.uri, endpoint_url=s3_bucket.endpoint_url)
    store.put_bytes(b"x", "run/a")

    listed = store.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]

    assert [item["Key"] for item in listed] == [f"{s3_bucket.prefix}/run/a"]


def test_stores_with_different_s3_prefixes_do_not_see_each_other(s3_bucket):
    first = S3Store(f"s3://{s3_bucket.name}/team-a", endpoint_url=s3_bucket.endpoint_url)
    second = S3Store(f"s3://{s3_bucket.name}/team-a-2", endpoint_url=s3_bucket.endpoint_url)
    first.put_bytes(b"a", "run/x")
    second.put_bytes(b"b", "run/x")

    assert first.list("") == ["run/x"]
    assert first.get_bytes("run/x") == b"a"


# --- opening a store -------------------------------------------------------------------------------------------

def test_open_store_picks_s3_for_an_s3_uri(s3_bucket):
    assert isinstance(open_store(s3_bucket.uri, s3_bucket.endpoint_url), S3Store)


def test_open_store_picks_a_directory_for_a_path(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalDirStore)


def test_open_store_rejects_another_scheme():
    with pytest.raises(ValueError, match="unsupported scheme in 'gs://bucket/x'"):
        open_store("gs://bucket/x")


def test_an_s3_uri_without_a_bucket_is_rejected():
    with pytest.raises(ValueError, match="no bucket"):
        S3Store("s3:///prefix")


# --- retries ---------------------------------------------------------------------------------------------------

def test_with_retries_returns_the_first_success_after_failures():
    calls, notes = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection reset")
        return "done"

    assert with_retries(flaky, what="upload x", base_delay=0, on_retry=notes.append) == "done"
    assert len(calls) == 3
    assert notes == ["upload x: attempt 1 failed (OSError: connection reset); retrying",
                     "upload x: attempt 2 failed (OSError: connection reset); retrying"]


def test_with_retries_raises_the_stores_error_after_every_attempt_failed(store, tmp_dirs):
    calls = []

    def fetch_missing():
        calls.append(1)
        store.get_file("run/never-written.pt", tmp_dirs("dst") / "x.pt")

    with pytest.raises(Exception) as raised:
        with_retries(fetch_missing, what="download", attempts=3, base_delay=0)

    # one retry layer: a local filesystem's error is retried here, an S3 request's by botocore alone
    assert len(calls) == (3 if isinstance(store, LocalDirStore) else 1)
    assert isinstance(raised.value, FileNotFoundError) or "404" in str(raised.value)
