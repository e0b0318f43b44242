"""Where checkpoints live durably: a local directory or an S3(-compatible) bucket, behind one small interface.

Keys are relative paths (`<run id>/step-00000500/MANIFEST.json`). Writes are whole-object: a local file is
written to a temporary name and renamed, an S3 object appears only once its upload completes, so a reader
never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Protocol, TypeVar

T = TypeVar("T")


class CheckpointStore(Protocol):
    uri: str

    def put_file(self, local: Path, key: str) -> None: ...
    def put_bytes(self, data: bytes, key: str) -> None: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def get_bytes(self, key: str) -> Optional[bytes]: ...
    def size(self, key: str) -> Optional[int]: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, keys: list[str]) -> None: ...


def open_store(uri: str, endpoint_url: Optional[str] = None) -> CheckpointStore:
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=endpoint_url)
    if "://" in uri:
        raise ValueError(f"train.checkpoint.uri: unsupported scheme in {uri!r} (expected s3:// or a directory)")
    return LocalDirStore(uri)


def with_retries(action: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.5,
                 on_retry: Optional[Callable[[str], None]] = None) -> T:
    """Run `action`, retrying with exponential backoff; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # boto3, OSError, ...: every transfer failure is worth a retry
            if attempt == attempts:
                raise
            if on_retry:
                on_retry(f"{what}: attempt {attempt} failed ({type(exc).__name__}: {exc}); retrying")
            time.sleep(base_delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


class LocalDirStore:
    def __init__(self, root: str):
        self.uri = root
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.copyfile(local, partial)
        os.replace(partial, target)

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        partial.write_bytes(data)
        os.replace(partial, target)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        shutil.copyfile(self._path(key), partial)
        os.replace(partial, local)

    def get_bytes(self, key: str) -> Optional[bytes]:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def size(self, key: str) -> Optional[int]:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3Store:
    """boto3 with its TransferManager (multipart, parallel parts), adaptive retries and timeouts."""

    def __init__(self, uri: str, endpoint_url: Optional[str] = None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.uri = uri
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"train.checkpoint.uri: no bucket in {uri!r}")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        config = Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=10, read_timeout=60,
                        max_pool_connections=32)
        self.client = boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3"),
                                   config=config)
        self.transfer = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20,
                                       max_concurrency=8)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        self.client.download_file(self.bucket, self._key(key), str(partial), Config=self.transfer)
        os.replace(partial, local)

    def get_bytes(self, key: str) -> Optional[bytes]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def size(self, key: str) -> Optional[int]:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix)):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
