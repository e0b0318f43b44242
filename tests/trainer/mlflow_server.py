"""A real `mlflow server` subprocess for tests: sqlite store in a tmp directory, optional basic auth, artifacts
proxied by the server to S3 (moto) or to a local directory. Listens on 127.0.0.1 only."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ADMIN_USER = "admin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    port: int
    process: subprocess.Popen
    log_path: Path
    username: Optional[str] = None
    password: Optional[str] = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """End the server this helper started: its process group (uvicorn forks a worker), by the PID we hold."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def _mlflow_executable() -> list[str]:
    beside = Path(sys.executable).with_name("mlflow")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def start_mlflow_server(workdir: Path, *, port: Optional[int] = None, auth: bool = False,
                        artifacts_destination: Optional[str] = None, s3_endpoint: Optional[str] = None,
                        startup_timeout: float = 60.0) -> MlflowServer:
    """Start `mlflow server` with its sqlite store (and auth db) under `workdir`; return once /health answers.

    artifacts_destination: where the server puts artifacts it proxies (default: workdir/artifacts);
    an s3:// destination needs s3_endpoint (moto). auth=True runs the basic-auth app with a random admin password.
    A server restarted on the same workdir finds its runs (and users) again."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_", "_MLFLOW_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1",
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                # no job runner: its 8 huey worker processes cost a start-up and CPU the tests never use
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if s3_endpoint:
        no_config = str(workdir / "no-aws-config")
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": no_config,
                    "AWS_SHARED_CREDENTIALS_FILE": no_config, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    username = password = None
    command = [*_mlflow_executable(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{workdir.resolve()}/mlflow.db",
               "--serve-artifacts", "--artifacts-destination",
               artifacts_destination or (workdir.resolve() / "artifacts").as_uri()]
    if auth:
        username, password = ADMIN_USER, _admin_password(workdir)
        config = workdir / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{workdir.resolve()}/basic_auth.db\n"
            f"admin_username = {username}\n"
            f"admin_password = {password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # without the cache every request pays a PBKDF2 check (~200 ms)
            "auth_cache_ttl_seconds = 300\n")
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": password})
        command += ["--app-name", "basic-auth"]
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path,
                          username=username, password=password)
    deadline = time.monotonic() + startup_timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"mlflow server not healthy after {startup_timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.25)


def _admin_password(workdir: Path) -> str:
    """One random password per workdir, kept so that a restart on the same auth db still matches it."""
    path = workdir / "admin-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
    return path.read_text()
