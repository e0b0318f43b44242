"""Where checkpoints live durably: a local directory or an S3(-compatible) bucket, behind one small interface.

Keys are relative paths (`<run id>/step-00000500/MANIFEST.json`). Writes are whole-object: a local file is
written to a temporary name and renamed, an S3 object appears only once its upload completes, so a reader
never sees half a file. `list(prefix)` matches keys by string prefix in both stores, as S3 does.

Chaos knob: with SPOTTRAIN_S3_FAULTS set (e.g. `error=0.2,delay=0.05:0.3,seed=7`) every S3 request first
sleeps a uniform random delay in [0.05, 0.3] s, and a random 20% of requests never reach the bucket but get
an HTTP 500 InternalError instead, which botocore's retries and `with_retries` must absorb (see S3Faults).
"""

from __future__ import annotations

import errno
import math
import os
import random
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, TypeVar

from spottrain_contract.errors import ConfigurationError

T = TypeVar("T")
Progress = Callable[[int], None]  # called with each count of bytes moved, from any thread
_CHUNK = 8 * 2**20


class CheckpointStore(Protocol):
    uri: str

    def put_file(self, local: Path, key: str, progress: Optional[Progress] = None) -> None: ...
    def put_bytes(self, data: bytes, key: str) -> None: ...
    def get_file(self, key: str, local: Path, progress: Optional[Progress] = None) -> None: ...
    def get_bytes(self, key: str) -> Optional[bytes]: ...
    def size(self, key: str) -> Optional[int]: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, keys: list[str]) -> None: ...


def open_store(uri: str, endpoint_url: Optional[str] = None, attempts: int = 0) -> CheckpointStore:
    """`attempts`: botocore's retries per S3 request where fewer than a job's should be waited for (a status
    command's read); 0 is the default budget."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=endpoint_url, attempts=attempts or S3_ATTEMPTS)
    if "://" in uri:
        raise ConfigurationError(f"train.checkpoint.uri: unsupported scheme in {uri!r} (expected s3:// or a directory)")
    return LocalDirStore(uri)


# Faults no retry can heal: the store is read-only or full, the credentials are missing or wrong, the bucket
# does not exist. Everything else (timeouts, throttling, 5xx, a dropped connection) may pass.
_PERMANENT_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR}
_PERMANENT_S3_CODES = {"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                       "AllAccessDisabled", "InvalidBucketName", "AccountProblem", "InvalidToken", "ExpiredToken",
                       "403"}
_PERMANENT_BOTO = {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _permanent_cause(exc: BaseException) -> Optional[BaseException]:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in _PERMANENT_ERRNOS:
            return cause
        if type(cause).__name__ in _PERMANENT_BOTO:
            return cause
        code = (getattr(cause, "response", None) or {}).get("Error", {}).get("Code")
        if code in _PERMANENT_S3_CODES:
            return cause
    return None


def is_permanent(exc: BaseException) -> bool:
    """True for a store failure no retry can heal, looked up through the chain of causes (boto3 wraps the
    ClientError of an upload in an S3UploadFailedError; pathlib's mkdir raises EPERM while handling ENOENT)."""
    return _permanent_cause(exc) is not None


def store_failure(exc: BaseException) -> str:
    """One line for a store failure: the cause that makes it permanent, else the error itself."""
    shown = _permanent_cause(exc) or exc
    said = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {said[0]}" if said else type(shown).__name__


class StoreUnavailable(RuntimeError):
    """The store could not be reached (a timeout, a refused connection); a new attempt may succeed."""


def probe_store(store: CheckpointStore, run_id: str, rank: int) -> None:
    """Write and delete a small object before anything is built: a store that refuses writes (read-only, full,
    no such bucket, bad credentials) stops the run now, not after hours of training without one durable
    checkpoint. Every rank probes: each uploads its own shards."""
    key = f"{run_id}/.probe-rank-{rank:05d}"
    try:
        with_retries(lambda: store.put_bytes(b"probe", key), what=f"probe {store.uri}", attempts=3)
        with_retries(lambda: store.delete([key]), what=f"probe {store.uri}", attempts=3)
    except Exception as exc:  # boto3 and the filesystem raise many types; classified below
        what = f"cannot write to the checkpoint store {store.uri} ({store_failure(exc)})"
        if is_permanent(exc):
            raise ConfigurationError(f"train.checkpoint.uri: {what}") from None
        raise StoreUnavailable(what) from exc


def _retried_by_botocore(exc: BaseException) -> bool:
    """An S3 request's failure: botocore already retried it (timeouts, throttling, 5xx) as S3Store configures."""
    return any(type(cause).__module__.startswith(("botocore", "boto3", "s3transfer")) for cause in _causes(exc))


def with_retries(action: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.5,
                 on_retry: Optional[Callable[[str], None]] = None) -> T:
    """Run `action`, retrying with exponential backoff what nothing below retries: a local filesystem's
    transient error, a checksum that did not match. One retry layer only: an S3 request's failure has been
    through botocore's own retries already, and a permanent failure (`is_permanent`) is never retried."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # OSError, ChecksumMismatch, boto3's: classified here
            if attempt == attempts or is_permanent(exc) or _retried_by_botocore(exc):
                raise
            if on_retry:
                on_retry(f"{what}: attempt {attempt} failed ({type(exc).__name__}: {exc}); retrying")
            time.sleep(base_delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _copy(source: Path, target: Path, progress: Optional[Progress]) -> None:
    if progress is None:
        shutil.copyfile(source, target)
        return
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(_CHUNK):
            writer.write(block)
            progress(len(block))


class LocalDirStore:
    def __init__(self, root: str):
        self.uri = root
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, local: Path, key: str, progress: Optional[Progress] = None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        _copy(local, partial, progress)
        os.replace(partial, target)

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        partial.write_bytes(data)
        os.replace(partial, target)

    def get_file(self, key: str, local: Path, progress: Optional[Progress] = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        _copy(self._path(key), partial, progress)
        os.replace(partial, local)

    def get_bytes(self, key: str) -> Optional[bytes]:
        """None for a missing key, and for one deleted between a listing and this read (retention in another
        process), as S3 answers: checking first and then reading would raise for that one."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def size(self, key: str) -> Optional[int]:
        try:
            status = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return status.st_size if stat.S_ISREG(status.st_mode) else None

    def list(self, prefix: str) -> list[str]:
        """os.walk, not Path.rglob: a directory that retention removes while it is walked is skipped (as S3 would
        not list it), where rglob raised FileNotFoundError into a reader listing a live run."""
        directory = prefix.rpartition("/")[0]  # the deepest directory every match lies under
        base = self._path(directory) if directory else self.root
        keys = []
        for folder, _, files in os.walk(base):
            relative = Path(folder).relative_to(self.root)
            keys.extend((relative / name).as_posix() for name in files if not name.startswith("."))
        return sorted(key for key in keys if key.startswith(prefix))

    def delete(self, keys: list[str]) -> None:
        """Delete the files, then the directories inside a run they leave empty (a deleted step's `_parts/`, as S3
        keeps no empty prefixes). A run's own directory stays: another rank may be about to write into it."""
        parents = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            parents.update(p for p in path.parents
                           if self.root in p.parents and len(p.relative_to(self.root).parts) >= 2)
        for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:  # not empty (or gone): keep it
                pass


S3_ATTEMPTS = 10
FAULTS_ENV = "SPOTTRAIN_S3_FAULTS"
_FAULTS_FORMAT = "error=P,delay=LO:HI,seed=N (each optional), e.g. error=0.2,delay=0.05:0.3,seed=7"
_INTERNAL_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                   b"<Message>We encountered an internal error. Please try again. (injected by "
                   + FAULTS_ENV.encode() + b")</Message><RequestId>spottrain-fault</RequestId></Error>")


@dataclass
class S3Faults:
    """Injected S3 failures, for chaos tests of the checkpoint path (set SPOTTRAIN_S3_FAULTS to enable).

    `error`: the fraction of requests answered by an HTTP 500 InternalError before they reach the bucket;
    `delay`: every request first sleeps uniform(LO, HI) seconds (`delay=X` means X:X);
    `seed`: seeds the random choices (unset: a fresh seed per client). `errors_injected` counts the 500s.
    """
    error: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    seed: Optional[int] = None
    errors_injected: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False, default_factory=threading.Lock)

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str) -> "S3Faults":
        def invalid(why: str) -> ValueError:
            return ValueError(f"{FAULTS_ENV}={spec!r}: {why}; expected {_FAULTS_FORMAT}")

        values: dict = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, text = (s.strip() for s in item.partition("="))
            if not sep or name not in ("error", "delay", "seed") or name in values:
                raise invalid(f"unknown, repeated or valueless item {item!r}")
            try:
                if name == "error":
                    values[name] = float(text)
                elif name == "delay":
                    low, _, high = text.partition(":")
                    values[name] = (float(low), float(high or low))
                else:
                    values[name] = int(text)
            except ValueError:
                raise invalid(f"{name}: {text!r} is not a number") from None
        error, (low, high) = values.get("error", 0.0), values.get("delay", (0.0, 0.0))
        if not 0.0 <= error <= 1.0:
            raise invalid(f"error={error} is not a fraction in [0, 1]")
        if not 0.0 <= low <= high < math.inf:
            raise invalid(f"delay={low}:{high} needs 0 <= LO <= HI seconds")
        return cls(error=error, delay=(low, high), seed=values.get("seed"))

    def install(self, client) -> None:
        client.meta.events.register("before-send.s3.*", self._before_send)

    def _before_send(self, request, **_):
        from botocore.awsrequest import AWSResponse

        with self._lock:  # the transfer manager sends from several threads
            fail = self._rng.random() < self.error
            pause = self._rng.uniform(*self.delay)
            self.errors_injected += fail
        if pause:
            time.sleep(pause)
        if not fail:
            return None  # botocore sends the request
        return AWSResponse(request.url, 500, {"Content-Type": "application/xml",
                                              "Content-Length": str(len(_INTERNAL_ERROR))}, _Body(_INTERNAL_ERROR))


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


class S3Store:
    """boto3 with its TransferManager (multipart, parallel parts), adaptive retries and timeouts.

    `faults` is the S3Faults parsed from $SPOTTRAIN_S3_FAULTS, None when it is unset or empty; `attempts` is
    botocore's retry budget per request (fewer only where a test wants a failure fast)."""

    def __init__(self, uri: str, endpoint_url: Optional[str] = None, attempts: int = S3_ATTEMPTS):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.uri = uri
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigurationError(f"train.checkpoint.uri: no bucket in {uri!r}")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        spec = os.environ.get(FAULTS_ENV, "").strip()
        self.faults: Optional[S3Faults] = S3Faults.parse(spec) if spec else None
        # The one retry layer of S3 requests (with_retries leaves them alone): adaptive backoff, ten attempts.
        config = Config(retries={"max_attempts": attempts, "mode": "adaptive"}, connect_timeout=10,
                        read_timeout=60, max_pool_connections=32)
        self.client = boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3"),
                                   config=config)
        self.transfer = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20,
                                       max_concurrency=8)
        if self.faults is not None:
            self.faults.install(self.client)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str, progress: Optional[Progress] = None) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer, Callback=progress)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, local: Path, progress: Optional[Progress] = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        self.client.download_file(self.bucket, self._key(key), str(partial), Config=self.transfer, Callback=progress)
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
