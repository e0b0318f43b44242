"""The run database behind `Registry`, on SQLite (the default) and a real PostgreSQL: records round trip,
listings, the one-time JSON import, migrations, many processes writing at once, one live attempt per run id."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord
from launcher.targets import Handle
from spottrain_contract.job import RunState

PROCESSES = 20


def a_record(run_id: str, started: float = 1.0, **fields) -> RunRecord:
    return RunRecord(**{"run_id": run_id, "recipe": "baseline", "target": "local", "state": RunState.RUNNING,
                        "started": started, "store": "s3://b/c", "local_dir": "/l", "tracking_uri": "",
                        **fields})


@pytest.fixture
def project(tmp_path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def test_a_record_round_trips_and_updates_merge_its_handle(db_url, project):
    registry = Registry(project, url=db_url)
    record = a_record("r1", started=1712345678.123456, handle={"job_id": 42, "nested": {"a": [1, 2]}},
                      log="/l/r1.log", project=str(project), recipe_document="name: x\n", sweep_id="sw", cell="c1")
    registry.save(record)
    assert registry.get("r1") == record and registry.exists("r1") and not registry.exists("r2")
    updated = registry.update("r1", state=RunState.FINISHED, ended=2.5, handle={"exit_code": 0})
    assert updated.handle == {"job_id": 42, "nested": {"a": [1, 2]}, "exit_code": 0}
    assert registry.update("r1", handle={"final_step": 40}).handle == {**updated.handle, "final_step": 40}
    assert registry.get("r1") == replace(updated, handle={**updated.handle, "final_step": 40})
    assert registry.get("r1").state is RunState.FINISHED
    registry.save(replace(record, restarts=3))  # save replaces the whole record
    assert registry.get("r1").restarts == 3 and registry.get("r1").handle == record.handle
    registry.delete("r1")
    assert not registry.exists("r1") and registry.all() == []
    with pytest.raises(LaunchError, match="no run 'r1' launched from this project"):
        registry.get("r1")
    with pytest.raises(LaunchError, match="no run 'nope'"):
        registry.update("nope", state=RunState.FAILED)


def test_all_is_oldest_first_and_cells_of_finds_a_sweeps_cells(db_url, project):
    registry = Registry(project, url=db_url)
    for run_id, started, cell in [("late", 30.0, "b"), ("early", 10.0, "a"), ("middle", 20.0, None)]:
        registry.save(a_record(run_id, started, sweep_id="sw" if cell else None, cell=cell))
    assert [r.run_id for r in registry.all()] == ["early", "middle", "late"]
    assert [r.cell for r in registry.cells_of("sw")] == ["a", "b"]
    assert registry.cells_of("none") == [] and registry.skipped == []


def test_a_window_of_all_is_its_newest_runs_oldest_first_and_count_counts_them(db_url, tmp_path):
    mine, theirs = Registry(tmp_path / "mine", url=db_url), Registry(tmp_path / "theirs", url=db_url)
    for i in range(5):
        mine.save(a_record(f"m{i}", 10.0 + i))
    theirs.save(a_record("t", 100.0))
    assert [r.run_id for r in mine.all(limit=2)] == ["m3", "m4"] and mine.count() == 5
    assert [r.run_id for r in mine.all(limit=2, offset=3)] == ["m0", "m1"]
    assert [r.run_id for r in Registry(tmp_path / "hub", url=db_url, every_project=True).all(limit=2)] == ["m4", "t"]
    assert Registry(tmp_path / "hub", url=db_url, every_project=True).count() == 6
    assert Registry(tmp_path, url=f"sqlite:///{tmp_path / 'none.db'}").count() == 0  # no database: none made


def test_listings_are_the_projects_and_every_projects_for_the_hub(db_url, tmp_path):
    mine, theirs = Registry(tmp_path / "mine", url=db_url), Registry(tmp_path / "theirs", url=db_url)
    mine.save(a_record("m1", 1.0))
    theirs.save(a_record("t1", 2.0))
    assert [r.run_id for r in mine.all()] == ["m1"] and [r.run_id for r in theirs.all()] == ["t1"]
    assert [r.run_id for r in Registry(tmp_path / "hub", url=db_url, every_project=True).all()] == ["m1", "t1"]
    assert mine.get("t1").run_id == "t1"  # a run id names one run across the database


def test_a_state_this_version_does_not_know_is_skipped_by_listings(db_url, project):
    from sqlalchemy import update

    from launcher.rundb.engine import engine_for, transaction
    from launcher.rundb.models import RunRow

    registry = Registry(project, url=db_url)
    registry.save(a_record("ok", 1.0))
    registry.save(a_record("newer", 2.0))
    with transaction(engine_for(registry.url), write=True) as connection:
        connection.execute(update(RunRow).where(RunRow.run_id == "newer").values(state="hibernating"))
    assert [r.run_id for r in registry.all()] == ["ok"]
    assert registry.skipped == ["run newer: not a run record (ValueError): skipped"]


def test_the_default_database_is_the_projects_sqlite_file_created_on_first_write(project, monkeypatch):
    monkeypatch.delenv("SPOTTRAIN_DB", raising=False)
    registry = Registry(project)
    assert registry.all() == [] and not registry.exists("r1") and not (project / "runs").exists()
    registry.save(a_record("r1"))
    assert (project / "runs" / "spottrain.db").is_file()
    assert Registry(project).get("r1") == a_record("r1")


def test_spottrain_db_names_the_database(db_url, project, monkeypatch):
    monkeypatch.setenv("SPOTTRAIN_DB", db_url)
    Registry(project).save(a_record("r1"))
    assert Registry(project, url=db_url).get("r1") == a_record("r1")
    assert not (project / "runs").exists()


def test_a_ledger_summary_is_kept_until_the_next_read_whatever_else_is_saved(db_url, project):
    from launcher.registry import LedgerSummary

    registry = Registry(project, url=db_url)
    registry.save(a_record("r1", launched_by="ana@box", task="ranker"))
    assert registry.get("r1").ledger is None
    summary = LedgerSummary(goodput=0.931, device_hours=0.42, device_unit="GPU", read=5.0)
    registry.cache_ledger("r1", summary)
    registry.save(a_record("r1", restarts=1, launched_by="bo@box", task="ranker"))  # a resume's fresh record
    registry.update("r1", state=RunState.FINISHED)
    assert registry.get("r1") == a_record("r1", restarts=1, launched_by="bo@box", task="ranker",
                                          state=RunState.FINISHED, ledger=summary)
    registry.cache_ledger("gone", summary)  # a run deleted meanwhile: nothing to keep it in
    assert not registry.exists("gone")


def write_json_registry(project: Path) -> None:
    directory = project / "runs" / "registry"
    directory.mkdir(parents=True)
    for run_id, started in [("old2", 2.0), ("old1", 1.0)]:
        (directory / f"{run_id}.json").write_text(json.dumps({
            **asdict(a_record(run_id, started, recipe_document="resolved_from: {}\ntask: ranker\n")),
            "state": "finished", "handle": {"job_id": 7}}))
    (directory / "cut.json").write_text('{"run_id": "cut", "reci')


def test_a_json_registry_is_imported_once_and_left_in_place(db_url, project):
    write_json_registry(project)
    registry = Registry(project, url=db_url)
    assert [(r.run_id, r.state, r.handle, r.task) for r in registry.all()] == [
        ("old1", RunState.FINISHED, {"job_id": 7}, "ranker"), ("old2", RunState.FINISHED, {"job_id": 7}, "ranker")]
    assert registry.skipped == ["runs/registry/cut.json: not a run record (JSONDecodeError): skipped"]
    registry.delete("old1")
    registry.update("old2", handle={"more": 1})
    again = Registry(project, url=db_url)
    assert [(r.run_id, r.handle) for r in again.all()] == [("old2", {"job_id": 7, "more": 1})]
    assert again.skipped == []
    assert sorted(p.name for p in (project / "runs" / "registry").iterdir()) == ["cut.json", "old1.json", "old2.json"]


def test_migrations_create_the_schema_from_empty_and_are_idempotent(db_url):
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, inspect

    from launcher.rundb import engine as db

    url = db.database_url(None, db_url)
    if db.sqlite_file(url):
        db.sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        db.upgrade(engine)
        assert db.current_revision(engine) == db.HEAD
        assert {"runs", "live_attempts", "json_imports", "sweeps", "sweep_decisions", db.VERSION_TABLE} <= set(
            inspect(engine).get_table_names())
        assert "alembic_version" not in inspect(engine).get_table_names()  # Optuna's, for a sweep's study
    finally:
        engine.dispose()
    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == db.HEAD


def _migrate(engine, revision: str, direction: str = "upgrade") -> None:
    from alembic import command
    from alembic.config import Config

    from launcher.rundb import engine as db

    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    with db.transaction(engine, exclusive=True) as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


SHIPPED = {"shipped": "resolved_from: {name: baseline}\ntask: ranker\nresources: {gpus: 4}\n",
           "cut": "resolved_from: {name: x}\ntask: [ranker", "no_task": "resolved_from: {name: x}\n",
           "odd_task": "task: {nested: 1}\n", "never_shipped": ""}


def test_migration_0002_upgrades_a_0001_database_holding_runs(db_url, project):
    """who and task columns, the ledger cache; each run's task read from the recipe it shipped (NULL where it
    shipped none or it does not parse); the rows otherwise as they were, and 0001 is reached back by downgrade."""
    from sqlalchemy import create_engine, insert, inspect, select

    from launcher.rundb import engine as db
    from launcher.rundb.models import RunRow
    from launcher.rundb.store import row_values

    url = db.database_url(None, db_url)
    if db.sqlite_file(url):
        db.sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        _migrate(engine, "0001")
        old_columns = {column["name"] for column in inspect(engine).get_columns("runs")}
        rows = [row_values(a_record(run_id, float(n), recipe_document=document), str(project))
                for n, (run_id, document) in enumerate(SHIPPED.items())]
        with db.transaction(engine, write=True) as connection:
            connection.execute(insert(RunRow).values([{k: v for k, v in row.items() if k in old_columns}
                                                      for row in rows]))
        _migrate(engine, "0002")
        assert db.current_revision(engine) == "0002"
        with db.transaction(engine) as connection:
            tasks = dict(connection.execute(select(RunRow.run_id, RunRow.task)).all())
        assert tasks == {"shipped": "ranker", "cut": None, "no_task": None, "odd_task": None, "never_shipped": None}
        registry = Registry(project, url=db_url)
        assert [(r.run_id, r.task, r.launched_by, r.ledger) for r in registry.all()] == [
            (run_id, tasks[run_id], None, None) for run_id in SHIPPED]
        assert registry.get("cut").recipe_document == SHIPPED["cut"]
        _migrate(engine, "0001", "downgrade")
        assert {column["name"] for column in inspect(engine).get_columns("runs")} == old_columns
        with db.transaction(engine) as connection:
            assert connection.execute(select(RunRow.run_id).order_by(RunRow.started)).scalars().all() == list(SHIPPED)
    finally:
        engine.dispose()
        db.dispose_all()


def test_a_database_made_before_0003_moves_its_version_out_of_alembic_version_once(db_url, project):
    """Until 0003 this schema's revision was in Alembic's default table, which a sweep's Optuna study needs for
    its own: the upgrade moves it, keeps every run, and a second upgrade finds it done."""
    from sqlalchemy import create_engine, insert, inspect, text

    from launcher.rundb import engine as db
    from launcher.rundb.models import RunRow
    from launcher.rundb.store import row_values

    url = db.database_url(None, db_url)
    if db.sqlite_file(url):
        db.sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        _migrate(engine, "0002")
        with db.transaction(engine, write=True) as connection:  # as 0002 left it: the revision in alembic_version
            connection.execute(insert(RunRow).values(row_values(a_record("kept"), str(project))))
            connection.execute(text(f"ALTER TABLE {db.VERSION_TABLE} RENAME TO alembic_version"))
        db.upgrade(engine)
        db.upgrade(engine)
        tables = set(inspect(engine).get_table_names())
        assert db.current_revision(engine) == db.HEAD and "alembic_version" not in tables and "sweeps" in tables
        assert [record.run_id for record in Registry(project, url=db_url).all()] == ["kept"]
    finally:
        engine.dispose()
        db.dispose_all()


# --- one live attempt per run id --------------------------------------------------------------------------------

def test_a_second_claim_of_a_live_run_is_refused_and_a_terminal_run_frees_it(db_url, project):
    registry = Registry(project, url=db_url)
    token = registry.claim_attempt(a_record("r1", state=RunState.LAUNCHING))
    assert registry.launching("r1")
    with pytest.raises(LaunchError, match=r"^run r1 is live on local \(launching\): stop it first"):
        registry.claim_attempt(a_record("r1"))
    registry.attempt_launched("r1", token)
    assert not registry.launching("r1")
    registry.update("r1", state=RunState.RUNNING)
    with pytest.raises(LaunchError, match=r"^run r1 is live on local \(running\)"):
        registry.claim_attempt(a_record("r1"))
    registry.update("r1", state=RunState.FAILED)  # a terminal state ends the attempt
    registry.claim_attempt(a_record("r1", started=5.0))
    assert registry.get("r1").started == 5.0


def test_a_claim_whose_launcher_died_is_taken_over(db_url, project):
    from sqlalchemy import update

    from launcher.rundb.engine import engine_for, transaction
    from launcher.rundb.models import LiveAttempt

    registry = Registry(project, url=db_url)
    registry.claim_attempt(a_record("r1", state=RunState.LAUNCHING))
    dead = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    import socket

    with transaction(engine_for(registry.url), write=True) as connection:
        connection.execute(update(LiveAttempt).values(launcher=f"{socket.gethostname()}:{dead.pid}"))
    assert not registry.launching("r1")
    registry.claim_attempt(a_record("r1", started=9.0))
    assert registry.get("r1").started == 9.0


# --- many processes at once -------------------------------------------------------------------------------------

def _writer(url: str, project: str, number: int, barriers, results) -> None:
    try:
        registry = Registry(Path(project), url=url)
        barriers[0].wait(60)  # every process opens the fresh database at once: one migrates, the others wait
        registry.save(a_record(f"p{number}", float(number)))
        if number == 0:
            registry.save(a_record("shared", 0.5))
        barriers[1].wait(60)
        for step in range(3):
            registry.update(f"p{number}", restarts=step + 1, handle={f"step{step}": step})
            registry.update("shared", handle={f"p{number}-{step}": number})
        results.put((number, "ok"))
    except BaseException as exc:  # reported to the test, not lost in a child's stderr
        results.put((number, f"{type(exc).__name__}: {exc}"))


def _claimer(url: str, project: str, number: int, barriers, results) -> None:
    try:
        registry = Registry(Path(project), url=url)
        registry.exists("contested")
        barriers[0].wait(60)
        try:
            registry.claim_attempt(a_record("contested", float(number), state=RunState.LAUNCHING,
                                            handle={"claimant": number}))
            results.put((number, "won"))
        except LaunchError as exc:
            results.put((number, "refused" if "is live on local (launching)" in str(exc) else str(exc)))
        barriers[1].wait(60)  # the winner's launch stays alive while the others try
    except BaseException as exc:
        results.put((number, f"{type(exc).__name__}: {exc}"))


def _run_all(target, url: str, project: Path) -> list:
    """PROCESSES forked processes running `target`; their (number, outcome) pairs."""
    from launcher.rundb.engine import dispose_all

    dispose_all()  # no connection of this process crosses the fork
    context = multiprocessing.get_context("fork")
    barriers, results = (context.Barrier(PROCESSES), context.Barrier(PROCESSES)), context.Queue()
    processes = [context.Process(target=target, args=(url, str(project), number, barriers, results))
                 for number in range(PROCESSES)]
    for process in processes:
        process.start()
    got = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
    return sorted(got)


@pytest.mark.slow
def test_twenty_processes_writing_at_once_into_a_fresh_database_lose_nothing(db_url, project):
    got = _run_all(_writer, db_url, project)
    assert got == [(number, "ok") for number in range(PROCESSES)]
    registry = Registry(project, url=db_url)
    records = {record.run_id: record for record in registry.all()}
    assert sorted(records) == sorted([f"p{n}" for n in range(PROCESSES)] + ["shared"])
    for number in range(PROCESSES):
        assert (records[f"p{number}"].restarts, records[f"p{number}"].handle) == (
            3, {"step0": 0, "step1": 1, "step2": 2})
    assert records["shared"].handle == {f"p{n}-{step}": n for n in range(PROCESSES) for step in range(3)}


@pytest.mark.slow
def test_of_twenty_processes_claiming_one_run_id_exactly_one_wins(db_url, project):
    got = _run_all(_claimer, db_url, project)
    assert sorted(outcome for _, outcome in got) == ["refused"] * (PROCESSES - 1) + ["won"], got
    winner = next(number for number, outcome in got if outcome == "won")
    assert Registry(project, url=db_url).get("contested").handle == {"claimant": winner}


# --- the runner over claims -------------------------------------------------------------------------------------

def _dead_pid() -> int:
    dead = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    return dead.pid


def test_a_launching_attempt_is_not_taken_for_dead_while_its_launch_lives(project):
    from launcher import runner

    registry = Registry(project)
    token = registry.claim_attempt(a_record("r1", state=RunState.LAUNCHING, project=str(project)))
    # the local target alone would call it failed: no supervisor yet
    assert runner.refresh(registry, registry.get("r1")).state is RunState.LAUNCHING
    with pytest.raises(LaunchError, match=r"^run r1 is live on local \(launching\)"):
        runner._refuse_a_second_live_attempt(registry, "r1")
    registry.attempt_launched("r1", token)  # launched, yet no supervisor pid: the target's word stands
    assert runner.refresh(registry, registry.get("r1")).state is RunState.FAILED
    registry.claim_attempt(a_record("r1", started=2.0))  # the failed run's claim went with its state


def test_a_stale_live_record_whose_supervisor_died_blocks_no_new_attempt(project):
    from launcher import runner

    registry = Registry(project)
    token = registry.claim_attempt(a_record("r1", project=str(project), handle={"supervisor_pid": _dead_pid()}))
    registry.attempt_launched("r1", token)
    with pytest.raises(LaunchError, match="is live"):
        registry.claim_attempt(a_record("r1"))  # the database alone still believes the record
    runner._refuse_a_second_live_attempt(registry, "r1")  # asks the target: failed, which frees the claim
    assert registry.get("r1").state is RunState.FAILED
    registry.claim_attempt(a_record("r1", started=2.0))


class _SlowHandle(Handle):
    launched_by: int


class _SlowTarget:
    """A target whose launch takes a moment (the window two concurrent launches of one run id would share)."""
    RUNS_HERE = False
    HANDLE = _SlowHandle

    @staticmethod
    def secret_names(recipe):
        return []

    @staticmethod
    def render(plan, secrets):
        return "document"

    @staticmethod
    def validate(document):
        pass

    @staticmethod
    def launch(plan, document, secrets, record):
        import time

        time.sleep(0.3)
        return _SlowHandle(launched_by=os.getpid())

    @staticmethod
    def status(record):
        from launcher.targets import RunStatus

        return RunStatus(state=RunState.RUNNING)


def _submitter(url: str, project: str, number: int, barriers, results) -> None:
    from launcher import runner
    from launch_helpers import plan_launch

    try:
        os.environ["SPOTTRAIN_DB"] = url
        plan = plan_launch("baseline", target="local", project_dir=Path(project), profile="local", run_id="same")
        barriers[0].wait(60)
        try:
            runner.submit(Registry(Path(project)), plan)
            results.put((number, "launched"))
        except LaunchError as exc:
            results.put((number, "refused" if "run same is live on local" in str(exc) else str(exc)))
        barriers[1].wait(60)
    except BaseException as exc:
        results.put((number, f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_of_twenty_concurrent_launches_of_one_run_id_one_launches(db_url, tmp_path, monkeypatch):
    from launch_helpers import copy_real_recipes

    import launcher.runner

    project = copy_real_recipes(tmp_path / "launching", names=("baseline",))
    monkeypatch.setattr(launcher.runner, "get_target", lambda name: _SlowTarget)
    got = _run_all(_submitter, db_url, project)
    assert sorted(outcome for _, outcome in got) == ["launched"] + ["refused"] * (PROCESSES - 1), got
    record = Registry(project, url=db_url).get("same")
    assert set(record.handle) == {"launched_by"}


def test_a_new_run_whose_id_another_run_holds_writes_nothing_over_it(db_url, project):
    from launcher.errors import RunIdTaken

    registry = Registry(project, url=db_url)
    registry.create(a_record("taken", state=RunState.FINISHED, recipe="critic"))
    with pytest.raises(RunIdTaken, match=r"^run id taken is another run's already: nothing was written over it"):
        registry.create(a_record("taken"))
    with pytest.raises(RunIdTaken):
        registry.claim_attempt(a_record("taken", state=RunState.LAUNCHING), new=True)  # a launch's new run
    kept = registry.get("taken")
    assert (kept.recipe, kept.state) == ("critic", RunState.FINISHED)
    assert not registry.launching("taken")


def test_new_run_ids_carry_32_random_bits_a_second():
    from launcher.plan import new_run_id

    ids = {new_run_id("baseline", now=0.0) for _ in range(2000)}
    assert len(ids) == 2000 and all(len(run_id.rsplit("-", 1)[1]) == 8 for run_id in ids)


def test_migrations_run_quietly_under_a_root_logger_at_info(project):
    """`import sky` calls logging.basicConfig(level=INFO) (one of its catalog fetchers does): a first launch on a
    platform then printed Alembic's INFO lines. The migrations say nothing, and the root logger is left as the
    application set it (its INFO lines still print)."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from pathlib import Path\n"
        "from launcher.registry import Registry\n"
        "Registry(Path(sys.argv[1])).all()\n"
        "Registry(Path(sys.argv[1]))._db()\n"
        "root = logging.getLogger()\n"
        "assert root.level == logging.INFO and len(root.handlers) == 1, (root.level, root.handlers)\n"
        "logging.getLogger('mine').info('still heard')\n")
    done = subprocess.run([sys.executable, "-c", script, str(project)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (project / "runs" / "spottrain.db").is_file()
    assert [line for line in done.stderr.splitlines() if "alembic" in line] == []
    assert "INFO:mine:still heard" in done.stderr.splitlines()
