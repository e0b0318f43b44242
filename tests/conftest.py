"""Fixtures every room's tests share: a real S3 endpoint (moto's server, in this process) and its buckets."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest


@dataclass(frozen=True)
class S3Bucket:
    """A fresh, empty bucket on the test endpoint; `uri` is `s3://<bucket>/<prefix>`."""
    name: str
    prefix: str
    endpoint_url: str

    @property
    def uri(self) -> str:
        return f"s3://{self.name}/{self.prefix}"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """moto's S3 server on a free local port, for the whole session; AWS_* point boto3 at test credentials."""
    from moto.server import ThreadedMotoServer

    no_config = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(no_config),
                            "AWS_SHARED_CREDENTIALS_FILE": str(no_config)}.items():
            patch.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                     "SPOTTRAIN_S3_FAULTS"):
            patch.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


_bucket_numbers = itertools.count()


@pytest.fixture
def s3_bucket(s3_endpoint) -> S3Bucket:
    """A new bucket (unique name) on the session's endpoint, with a prefix checkpoints go under."""
    import boto3

    name = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return S3Bucket(name=name, prefix="checkpoints", endpoint_url=s3_endpoint)


@pytest.fixture(scope="session")
def mlflow_sqlite(tmp_path_factory) -> Callable[[Path], str]:
    """mlflow_sqlite(path) -> the URI of a new, empty MLflow SQLite store at `path`: a copy of one whose tables were
    made once for the session, since MLflow's migrations take seconds for every new database (a copy: ~50 ms).
    `mlflow server --backend-store-uri sqlite:///PATH` starts on one as fast."""
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("mlflow-sqlite") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()  # makes the tables
    with sqlite3.connect(template) as db:  # and the Default experiment, under this client's artifact root: each
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")  # store makes its own, as a new one would

    def make(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory, mlflow_sqlite):
    """A real `mlflow server` with basic auth on 127.0.0.1 for the whole session (one takes seconds to start): the
    Model Registry tests, launcher and trainer alike, register into it, each under model names of its own."""
    from tests.trainer.mlflow_server import start_mlflow_server

    workdir = tmp_path_factory.mktemp("mlflow-auth")
    mlflow_sqlite(workdir / "mlflow.db")
    server = start_mlflow_server(workdir, auth=True)
    try:
        yield server
    finally:
        server.stop()
