"""Which database, and an engine for it: `SPOTTRAIN_DB` if set (e.g. `postgresql://user@host/spottrain`, reached
through psycopg 3), else the project's own SQLite file `runs/spottrain.db` (WAL, a busy timeout, foreign keys).
One engine per URL and process; the schema is brought to the newest migration on first open."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DB_ENV = "SPOTTRAIN_DB"
DEFAULT_DB = "runs/spottrain.db"
HEAD = "0003"  # the newest migration in migrations/versions (a test checks it against Alembic's head)
# This schema's version, in a table of its own: Optuna's study storage (a sweep's, in the same database) keeps
# Alembic's default `alembic_version` for its own schema. Databases made before 0003 kept ours there: moved once.
VERSION_TABLE = "spottrain_schema_version"
_OUR_REVISIONS = ("0001", "0002")  # what `alembic_version` held when it was ours
BUSY_TIMEOUT_MS = 60_000
_ADVISORY_LOCK = 0x5370_7454  # pg_advisory_xact_lock key around migrations ("SptT")

_engines: dict[tuple[int, str], Engine] = {}
_ready: set[tuple[int, str]] = set()
_lock = threading.Lock()


def database_url(project_dir: Optional[Path], url: Optional[str] = None) -> str:
    """`url`, else $SPOTTRAIN_DB, else the SQLite file in the project. A bare `postgresql://` is given the
    psycopg 3 driver (SQLAlchemy's default for that scheme is psycopg2)."""
    chosen = url or os.environ.get(DB_ENV)
    if not chosen:
        if project_dir is None:
            raise ValueError(f"no database: set {DB_ENV} or give a project directory")
        return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_DB}"
    if chosen.startswith(("postgresql://", "postgres://")):
        chosen = "postgresql+psycopg://" + chosen.split("://", 1)[1]
    return chosen


def sqlite_file(url: str) -> Optional[Path]:
    """The file of a SQLite URL (None for another database, or an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def engine_for(url: str) -> Engine:
    """The process's engine for `url`, its schema migrated to HEAD (a fork gets its own engine)."""
    url = database_url(None, url)
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url)
        if key not in _ready:
            upgrade(engine)
            _ready.add(key)
    return engine


def _create(url: str) -> Engine:
    file = sqlite_file(url)
    if file is None:
        return create_engine(url, pool_pre_ping=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.pool import NullPool

    # a connection per transaction: no connection held open between commands (other processes write the file)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # transactions are begun below, with the mode each one needs
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON",
                       "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection):
        # a writer takes SQLite's write lock at BEGIN (IMMEDIATE): a read-modify-write never meets a
        # concurrent writer halfway; migrations take it EXCLUSIVE
        mode = connection.get_execution_options().get("spottrain_lock", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def transaction(engine: Engine, *, write: bool = False, exclusive: bool = False) -> Iterator[Connection]:
    """One transaction; `write`: SQLite's BEGIN IMMEDIATE (on PostgreSQL, writers lock the rows they change
    with SELECT … FOR UPDATE)."""
    with engine.connect() as connection:
        lock = "EXCLUSIVE" if exclusive else "IMMEDIATE" if write else "DEFERRED"
        connection = connection.execution_options(spottrain_lock=lock)
        with connection.begin():
            yield connection


def current_revision(engine: Engine) -> Optional[str]:
    with transaction(engine) as connection:
        try:
            return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except Exception:  # no table yet: a fresh database
            return None


def upgrade(engine: Engine) -> None:
    """Alembic `upgrade head`, in one transaction that holds a lock every other process opening the database
    waits on (PostgreSQL: a transaction-scoped advisory lock; SQLite: BEGIN EXCLUSIVE): when several
    processes open a fresh database at once, one migrates and the others find it done. The fast path (already
    at HEAD) loads no Alembic. Quiet: Alembic's logger is set to WARNING unless someone gave it a level (a
    library may have put the root logger at INFO: `import sky` does), and the root logger is left alone."""
    try:
        if current_revision(engine) == HEAD:
            return
    except Exception:
        pass
    quiet()  # before the import: loading Alembic logs its plugins
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with transaction(engine, exclusive=True) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        _adopt_old_version_table(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _adopt_old_version_table(connection: Connection) -> None:
    """A database made before 0003 holds this schema's revision in `alembic_version`: move it to VERSION_TABLE
    (once), leaving `alembic_version` to Optuna."""
    from sqlalchemy import inspect

    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables or VERSION_TABLE in tables:
        return
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if revision not in _OUR_REVISIONS:
        return  # Optuna's own
    connection.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:revision)"), {"revision": revision})
    connection.execute(text("DROP TABLE alembic_version"))


def quiet() -> None:
    """Alembic's logger (and so its `INFO ... Running upgrade` lines) at WARNING, where no level was chosen."""
    alembic_logger = logging.getLogger("alembic")
    if alembic_logger.level == logging.NOTSET:
        alembic_logger.setLevel(logging.WARNING)


def dispose_all() -> None:
    """Close every engine of this process (tests, and a process about to fork)."""
    with _lock:
        for (pid, _url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()
        _ready.clear()
