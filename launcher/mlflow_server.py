"""Talking to MLflow from the launcher's own process (a sweep's parent run; the hub's list of runs logged
elsewhere): a team's server or the SQLite store of runs here, with the credentials a launch passes to its job
(MLFLOW_TRACKING_USERNAME/PASSWORD from the environment or `.env`), the HTTP timeout and retries the caller
chooses, and a failure said in one line."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from launcher.process_env import environment
from launcher.secrets import resolve_secrets

MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

# MLflow reads its credentials and HTTP settings from os.environ at each request, so they are put there while a
# client is used and taken out after; one user at a time, or two threads (the hub's) would restore each other's.
_environ_lock = threading.Lock()


@contextlib.contextmanager
def server_client(uri: str, project_dir: Path, *, timeout: int = 10, retries: int = 2):
    """An MlflowClient for `uri`, with the credentials found here and this timeout (seconds a request) and number
    of retries, in this process only while it is used. A value already in the environment wins."""
    settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    settings = {name: os.environ.get(name, value) for name, value in settings.items()}
    found = resolve_secrets(MLFLOW_CREDENTIALS, project_dir, required=False).as_dict()
    with _environ_lock, environment({**settings, **found}):
        from mlflow.tracking import MlflowClient

        yield MlflowClient(tracking_uri=uri)


def one_line(exc: BaseException) -> str:
    """An MlflowException's (or the transport's) message in one line, short enough for a status line."""
    said = str(exc).strip()
    return said.splitlines()[0][:160] if said else type(exc).__name__
