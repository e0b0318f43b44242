"""A real PostgreSQL server for the run-database tests: initdb into a temporary directory, started on 127.0.0.1
and a free port, stopped at the end of the session (by its own pg_ctl). PostgreSQL refuses to run as root:
as root (CI), the server runs as the `postgres` user in a directory it owns."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def tool(name: str) -> Optional[str]:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the server's admin URL (`postgresql://postgres@127.0.0.1:PORT/postgres`)."""
    initdb, pg_ctl = tool("initdb"), tool("pg_ctl")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="spottrain-pg-"))
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    if as_postgres:
        base.chmod(0o755)
        for path in (base, sockets):
            shutil.chown(path, "postgres", "postgres")
    port = _free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_postgres, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    try:
        run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        run(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o",
            f"-k {sockets} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


_numbers = itertools.count()


def fresh_database(admin_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"spottrain_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
