"""What was launched: the run database (`launcher/rundb/`), one row per run, through SQLAlchemy.

`launch status`, `logs`, `stop` and `compare` read it, and the hub reads and writes the same tables, so they
work after the launching shell is gone. The database is the project's SQLite file `runs/spottrain.db` (WAL),
or for a team the one `SPOTTRAIN_DB` names (`postgresql://…`), where every teammate's launches land. Each
target keeps what it needs to find its run again (a process group here, a job id on SkyPilot, a run id on
VESSL) in `handle`; the trainer's progress and the checkpoints are found through `local_dir` and `store`.

Run ids name runs across the whole database (they key the checkpoint stores and MLflow tags too): `get`,
`exists`, `update` and `delete` find a run whichever project launched it. Listings belong to a project: `all`
and `cells_of` return the runs the registry of *this* project saved (on the default SQLite file: every run in
it), or every project's with `Registry(..., every_project=True)` (the hub). A project's old JSON registry
(`runs/registry/*.json`) is imported into the database once, on first use, and left in place.

One live attempt per run id is the database's: `claim_attempt` inserts the run's row in `live_attempts`, whose
primary key refuses a second one; the row goes when the run's state becomes terminal.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError, RunIdTaken, RunNotFound
from launcher.rundb.records import LedgerSummary, RunRecord, record_from_fields
from spottrain_contract.job import RunState

REGISTRY_DIR = "runs/registry"  # the JSON registry of old, imported once
LOG_DIR = "runs/logs"
LAUNCH_CLAIM_SECONDS = 900.0  # a claim still launching from another machine is trusted this long
_TERMINAL_VALUES = frozenset(state.value for state in RunState if state.is_terminal)


def this_user() -> str:
    """`user@host` of whoever runs this process: a run's `launched_by`, the Runs page's "who"."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's uid without a passwd entry)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


_registries: dict[tuple[str, str, bool], "Registry"] = {}


def registry_of(project_dir: Path, *, every_project: bool = False) -> "Registry":
    """The process's one registry of a project, for the database in force (SPOTTRAIN_DB, else the project's
    SQLite file): each caller that needs a project's runs (a workspace, a target finding its run again) shares
    it, with its engine."""
    from launcher.rundb.engine import database_url

    project_dir = Path(project_dir).resolve()
    key = (str(project_dir), database_url(project_dir), every_project)
    if key not in _registries:
        _registries[key] = Registry(project_dir, every_project=every_project)
    return _registries[key]


def live_message(run_id: str, target: str, state: str, step: str = "-") -> str:
    step = f", step {step}" if step != "-" else ""
    return (f"run {run_id} is live on {target} ({state}{step}): stop it first (launch stop {run_id}) or follow it "
            f"(launch logs {run_id} --follow)")


class Registry:
    def __init__(self, project_dir: Path, url: Optional[str] = None, *, every_project: bool = False):
        self.project_dir = Path(project_dir)
        self.url = url  # else $SPOTTRAIN_DB, else runs/spottrain.db in the project
        self.every_project = every_project
        self.skipped: list[str] = []  # what `all` could not read, one line each
        self._engine = None
        self._import_skipped: list[str] = []

    # --- the database, opened on first use --------------------------------------------------------------------

    @property
    def project_key(self) -> str:
        return str(self.project_dir.resolve())

    @property
    def database_url(self) -> str:
        """The database this registry keeps its runs in (a sweep's Optuna study is kept there too)."""
        from launcher.rundb.engine import database_url

        return database_url(self.project_dir, self.url)

    def _db(self, create: bool = True):
        """The engine (migrated, the JSON registry imported); None when `create` is false and the project's
        SQLite file does not exist yet: reading an empty registry writes nothing."""
        if self._engine is None:
            from launcher.rundb import engine as db, import_json

            url = db.database_url(self.project_dir, self.url)
            file = db.sqlite_file(url)
            legacy = import_json.pending(self.project_dir)
            if not create and file is not None and not file.exists() and not legacy:
                return None
            self._engine = db.engine_for(url)
            if legacy:
                self._import_skipped = import_json.import_once(self._engine, self.project_dir, self.project_key)
        return self._engine

    def _read(self):
        from launcher.rundb.engine import transaction

        return transaction(self._db())

    def _write(self):
        from launcher.rundb.engine import transaction

        return transaction(self._db(), write=True)

    def _listed(self, query):
        from launcher.rundb.models import RunRow

        return query if self.every_project else query.where(RunRow.registry_project == self.project_key)

    # --- the interface every caller uses ----------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        from launcher.rundb.models import RunRow
        from launcher.rundb.store import row_values, upsert

        values = row_values(record, self.project_key)
        with self._write() as connection:
            connection.execute(upsert(connection, RunRow, values, "run_id"))
            if values["state"] in _TERMINAL_VALUES:
                _release(connection, record.run_id)

    def create(self, record: RunRecord) -> None:
        """Insert a new run's record; RunIdTaken where its id is another run's (nothing is written over)."""
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        from launcher.rundb.models import RunRow
        from launcher.rundb.store import row_values

        try:
            with self._write() as connection:
                connection.execute(insert(RunRow).values(row_values(record, self.project_key)))
        except IntegrityError:
            raise _taken(record.run_id) from None

    def update(self, run_id: str, *, handle: Optional[dict] = None, **changes) -> RunRecord:
        """Change fields of a record in one transaction, its row locked (SELECT … FOR UPDATE; SQLite: BEGIN
        IMMEDIATE); `handle` entries are merged into the record's handle, so the launcher and a supervisor each
        adding their own entries never erase the other's."""
        from sqlalchemy import select, update as sql_update

        from launcher.rundb.models import RunRow
        from launcher.rundb.store import row_values

        with self._write() as connection:
            row = connection.execute(select(RunRow.__table__).where(RunRow.run_id == run_id).with_for_update()
                                     ).mappings().first()
            if row is None:
                raise self._unknown(run_id)
            record = _record(row)
            for key, value in changes.items():
                setattr(record, key, value)
            if handle:
                record.handle = {**record.handle, **handle}
            values = row_values(record, row["registry_project"])
            del values["registry_project"], values["run_id"]
            connection.execute(sql_update(RunRow).where(RunRow.run_id == run_id).values(values))
            if values["state"] in _TERMINAL_VALUES:
                _release(connection, run_id)
        return record

    def cache_ledger(self, run_id: str, summary: LedgerSummary) -> None:
        """Keep what was just read of the run's ledger in its row (nothing happens for a run deleted meanwhile)."""
        from sqlalchemy import update

        from launcher.rundb.models import RunRow
        from launcher.rundb.store import ledger_values

        with self._write() as connection:
            connection.execute(update(RunRow).where(RunRow.run_id == run_id).values(ledger_values(summary)))

    def delete(self, run_id: str) -> None:
        from sqlalchemy import delete

        from launcher.rundb.models import RunRow

        if self._db(create=False) is None:
            return
        with self._write() as connection:
            connection.execute(delete(RunRow).where(RunRow.run_id == run_id))
            _release(connection, run_id)

    def exists(self, run_id: str) -> bool:
        from sqlalchemy import select

        from launcher.rundb.models import RunRow

        if self._db(create=False) is None:
            return False
        with self._read() as connection:
            return connection.execute(select(RunRow.run_id).where(RunRow.run_id == run_id)).first() is not None

    def get(self, run_id: str) -> RunRecord:
        from sqlalchemy import select

        from launcher.rundb.models import RunRow

        row = None
        if self._db(create=False) is not None:
            with self._read() as connection:
                row = connection.execute(select(RunRow.__table__).where(RunRow.run_id == run_id)).mappings().first()
        if row is None:
            raise self._unknown(run_id)
        return _record(row)

    def all(self, *, limit: Optional[int] = None, offset: int = 0) -> list[RunRecord]:
        """Every readable record of this project (every project's with `every_project`), oldest first; a row
        that is not one (a state this version does not know) is skipped and named in `skipped`, as are the
        files the one-time import of the JSON registry could not read. With `limit`, only the `limit` newest
        after the `offset` newest (still oldest first): a listing of thousands of runs reads one window of them."""
        from sqlalchemy import select

        from launcher.rundb.models import RunRow

        if self._db(create=False) is None:
            self.skipped = []
            return []
        query = self._listed(select(RunRow.__table__))
        if limit is None:
            query = query.order_by(RunRow.started, RunRow.run_id)
        else:
            query = query.order_by(RunRow.started.desc(), RunRow.run_id.desc()).limit(limit).offset(offset)
        with self._read() as connection:
            rows = connection.execute(query).mappings().all()
        if limit is not None:
            rows.reverse()
        records, self.skipped = [], list(self._import_skipped)
        for row in rows:
            try:
                records.append(_record(row))
            except (ValueError, TypeError, KeyError) as exc:
                self.skipped.append(f"run {row['run_id']}: not a run record ({type(exc).__name__}): skipped")
        return records

    def count(self) -> int:
        """How many runs `all()` would list (unreadable rows included)."""
        from sqlalchemy import func, select

        from launcher.rundb.models import RunRow

        if self._db(create=False) is None:
            return 0
        with self._read() as connection:
            return connection.execute(self._listed(select(func.count()).select_from(RunRow))).scalar_one()

    def cells_of(self, sweep_id: str) -> list[RunRecord]:
        """The launched cells of a sweep, oldest first (empty: no such sweep)."""
        return [record for record in self.all() if record.sweep_id == sweep_id]

    def log_path(self, run_id: str) -> Path:
        path = self.project_dir / LOG_DIR / f"{run_id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _unknown(self, run_id: str) -> RunNotFound:
        known = [r.run_id for r in self.all(limit=5)]
        return RunNotFound(f"no run '{run_id}' launched from this project"
                           + (f" (recent: {', '.join(known)})" if known else ""))

    # --- one live attempt per run id ------------------------------------------------------------------------

    def claim_attempt(self, record: RunRecord, *, new: bool = False) -> str:
        """Save `record` (a new attempt of its run) and claim the run's one live attempt, in one transaction;
        returns the claim's token. Refused (LaunchError, the same words as for a live run) while another attempt
        holds the claim: one still launching from a live process, or one launched whose run is not terminal. A
        stale claim (its launcher gone, its run terminal or deleted) is taken over, by exactly one claimant. A
        `new` run's record is inserted: RunIdTaken where another run holds its id."""
        from sqlalchemy import delete, insert, select
        from sqlalchemy.exc import IntegrityError

        from launcher.rundb.models import LiveAttempt, RunRow
        from launcher.rundb.store import row_values, upsert

        token, values = uuid.uuid4().hex, row_values(record, self.project_key)
        for _ in range(10):
            try:
                with self._write() as connection:
                    connection.execute(insert(LiveAttempt).values(run_id=record.run_id, token=token,
                                                                  claimed=time.time(), launcher=this_process()))
                    connection.execute(insert(RunRow).values(values) if new else
                                       upsert(connection, RunRow, values, "run_id"))
                return token
            except IntegrityError:
                pass
            with self._read() as connection:
                claim = connection.execute(select(LiveAttempt.__table__).where(LiveAttempt.run_id == record.run_id)
                                           ).mappings().first()
                run = connection.execute(select(RunRow.target, RunRow.state).where(RunRow.run_id == record.run_id)
                                         ).first()
            if claim is None and new and run is not None:
                raise _taken(record.run_id)
            if claim is None:
                continue  # released meanwhile: claim again
            if _claim_is_live(claim, run):
                raise LaunchError(live_message(record.run_id, run.target, run.state))
            with self._write() as connection:  # stale: only the claimant that still sees this token removes it
                connection.execute(delete(LiveAttempt).where(LiveAttempt.run_id == record.run_id,
                                                             LiveAttempt.token == claim["token"]))
        raise LaunchError(f"run {record.run_id}: could not claim its attempt (claims kept changing): try again")

    def attempt_launched(self, run_id: str, token: str) -> None:
        """The claimed attempt was handed to its target: from now on it is live as long as its run's state is."""
        from sqlalchemy import update

        from launcher.rundb.models import LiveAttempt

        with self._write() as connection:
            connection.execute(update(LiveAttempt).where(LiveAttempt.run_id == run_id, LiveAttempt.token == token
                                                         ).values(launcher=None))

    def release_attempt(self, run_id: str, token: Optional[str] = None) -> None:
        with self._write() as connection:
            _release(connection, run_id, token)

    def launching(self, run_id: str) -> bool:
        """Whether an attempt of the run is being handed to its target right now by a live launch (its target
        cannot be asked about it yet)."""
        from sqlalchemy import select

        from launcher.rundb.models import LiveAttempt

        if self._db(create=False) is None:
            return False
        with self._read() as connection:
            claim = connection.execute(select(LiveAttempt.__table__).where(LiveAttempt.run_id == run_id)
                                       ).mappings().first()
        return bool(claim and claim["launcher"] and holder_alive(claim["launcher"], claim["claimed"]))


def _taken(run_id: str) -> RunIdTaken:
    return RunIdTaken(f"run id {run_id} is another run's already: nothing was written over it (launch again for a "
                      f"fresh id)")


def _release(connection, run_id: str, token: Optional[str] = None) -> None:
    from sqlalchemy import delete

    from launcher.rundb.models import LiveAttempt

    condition = [LiveAttempt.run_id == run_id] + ([LiveAttempt.token == token] if token else [])
    connection.execute(delete(LiveAttempt).where(*condition))


def this_process() -> str:
    """`host:pid`: who holds a launch's claim of a run, or a sweep's controller."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(launcher: str, claimed: float) -> bool:
    """Whether the `host:pid` holding a claim lives: asked of this machine's processes, or (another host's)
    taken as alive while its claim or heartbeat is younger than LAUNCH_CLAIM_SECONDS."""
    host, _, pid = launcher.rpartition(":")
    if host != socket.gethostname():
        return time.time() - claimed < LAUNCH_CLAIM_SECONDS
    from launcher.targets.local import processes

    return processes.alive(pid)


def _claim_is_live(claim, run) -> bool:
    if run is None:  # the run's record is gone
        return False
    if claim["launcher"]:
        return holder_alive(claim["launcher"], claim["claimed"])
    return run.state not in _TERMINAL_VALUES


def _record(row) -> RunRecord:
    from launcher.rundb.store import ledger_summary

    values = {name: row[name] for name in RunRecord.__dataclass_fields__ if name != "ledger"}
    values["handle"] = dict(values["handle"] or {})
    return record_from_fields({**values, "ledger": ledger_summary(row)})


def age(seconds_since: float) -> str:
    elapsed = max(0, int(time.time() - seconds_since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if elapsed >= size:
            return f"{elapsed // size}{unit}"
    return f"{elapsed}s"
