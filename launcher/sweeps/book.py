"""The run database's record of the sweeps a controller explores: one row per sweep (what was asked, its state,
the controller that holds it) and one per decision (`rundb.models.SweepRow`, `SweepDecision`). Every decision is
written here before it is acted on, so a controller that died leaves what it decided and a new one acts on it
instead of deciding again."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError, SweepNotFound
from launcher.registry import Registry, holder_alive, this_process
from launcher.requests import LaunchRequest

CONTROLLER_LOG = "controller.log"  # under runs/sweeps/<sweep id>/


class SweepState(str, enum.Enum):
    RUNNING = "running"  # its controller launches, judges and stops cells
    STOPPING = "stopping"  # asked to stop: the controller stops its live cells, then marks it stopped
    STOPPED = "stopped"
    FINISHED = "finished"  # every cell finished or was pruned (or failed), and no trial is left to draw

    def __str__(self) -> str:
        return self.value


class Verdict(str, enum.Enum):
    PROMOTED = "promoted"  # goes on past the rung
    PRUNED = "pruned"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SweepRecord:
    sweep_id: str
    recipe: str
    target: str
    method: str
    request: dict  # recipe, target, profile, overrides, max_parallel, chaos: what each cell is planned from
    search: dict  # the Search as the recipe resolved it
    state: SweepState
    started: float
    ended: Optional[float]
    controller: Optional[str]
    heartbeat: Optional[float]
    parent_run: Optional[str]


@dataclass(frozen=True)
class Decision:
    cell: str
    run_id: str
    rung: int
    budget: float  # in the search's budget unit
    value: Optional[float]
    verdict: Verdict
    decided: float
    reported: Optional[float]  # when the judged value was logged (MLflow's timestamp)
    acted: Optional[float]  # when a pruned cell's stop was handed to its target


class ControllerBusy(LaunchError):
    """Another live controller holds the sweep."""


class SweepBook:
    """The sweeps and decisions of the registry's database."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def create(self, record: SweepRecord) -> None:
        """Insert the sweep, or leave the row of a sweep launched before as it is (its decisions stand)."""
        from launcher.rundb.models import SweepRow
        from launcher.rundb.store import insert_ignoring_existing

        values = {**record.__dict__, "state": str(record.state), "registry_project": self.registry.project_key}
        with self.registry._write() as connection:
            connection.execute(insert_ignoring_existing(connection, SweepRow, [values]))

    def exists(self, sweep_id: str) -> bool:
        return self.find(sweep_id) is not None

    def find(self, sweep_id: str) -> Optional[SweepRecord]:
        from sqlalchemy import select

        from launcher.rundb.models import SweepRow

        if self.registry._db(create=False) is None:
            return None
        with self.registry._read() as connection:
            row = connection.execute(select(SweepRow).where(SweepRow.sweep_id == sweep_id)).mappings().first()
        return _record(row) if row is not None else None

    def get(self, sweep_id: str) -> SweepRecord:
        """The sweep's record; SweepNotFound where no search explores a sweep of that id."""
        found = self.find(sweep_id)
        if found is None:
            if self.registry.cells_of(sweep_id):
                raise SweepNotFound(f"sweep {sweep_id} has no search: every cell trains to the end (launch "
                                    f"compare {sweep_id} shows them)")
            raise SweepNotFound(f"no sweep {sweep_id!r} with a search in the run database (launch status lists "
                                f"every sweep)")
        return found

    def all(self) -> list[SweepRecord]:
        from sqlalchemy import select

        from launcher.rundb.models import SweepRow

        if self.registry._db(create=False) is None:
            return []
        query = select(SweepRow).order_by(SweepRow.started)
        if not self.registry.every_project:
            query = query.where(SweepRow.registry_project == self.registry.project_key)
        with self.registry._read() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def update(self, sweep_id: str, **changes) -> SweepRecord:
        from sqlalchemy import update

        from launcher.rundb.models import SweepRow

        if "state" in changes:
            changes["state"] = str(changes["state"])
        with self.registry._write() as connection:
            connection.execute(update(SweepRow).where(SweepRow.sweep_id == sweep_id).values(**changes))
        return self.get(sweep_id)

    def claim(self, sweep_id: str) -> SweepRecord:
        """Hold the sweep for this process's controller; ControllerBusy while another live one holds it (a dead
        one's hold is taken over: the new controller resumes where it stopped)."""
        from sqlalchemy import select, update

        from launcher.rundb.models import SweepRow

        me = this_process()
        with self.registry._write() as connection:
            query = select(SweepRow.controller, SweepRow.heartbeat).where(SweepRow.sweep_id == sweep_id)
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()
            row = connection.execute(query).first()
            if row is None:
                raise LaunchError(f"no sweep {sweep_id!r}")
            holder, beat = row
            if holder and holder != me and holder_alive(holder, beat or 0.0):
                raise ControllerBusy(f"sweep {sweep_id}: its controller {holder} is alive")
            connection.execute(update(SweepRow).where(SweepRow.sweep_id == sweep_id)
                               .values(controller=me, heartbeat=time.time()))
        return self.get(sweep_id)

    def beat(self, sweep_id: str) -> None:
        self.update(sweep_id, heartbeat=time.time())

    def release(self, sweep_id: str) -> None:
        from sqlalchemy import update

        from launcher.rundb.models import SweepRow

        with self.registry._write() as connection:
            connection.execute(update(SweepRow).where(SweepRow.sweep_id == sweep_id,
                                                      SweepRow.controller == this_process()).values(controller=None))

    def controller_alive(self, record: SweepRecord) -> bool:
        return bool(record.controller) and holder_alive(record.controller, record.heartbeat or 0.0)

    # --- decisions ----------------------------------------------------------------------------------------------

    def decide(self, sweep_id: str, decision: Decision) -> Decision:
        """Write a decision; where one for the same cell and rung is there already, that one stands (returned)."""
        from sqlalchemy import select

        from launcher.rundb.models import SweepDecision
        from launcher.rundb.store import insert_ignoring_existing

        values = {**decision.__dict__, "verdict": str(decision.verdict), "sweep_id": sweep_id}
        with self.registry._write() as connection:
            connection.execute(insert_ignoring_existing(connection, SweepDecision, [values]))
            row = connection.execute(select(SweepDecision).where(
                SweepDecision.sweep_id == sweep_id, SweepDecision.cell == decision.cell,
                SweepDecision.rung == decision.rung)).mappings().one()
        return _decision(row)

    def acted(self, sweep_id: str, cell: str, rung: int) -> None:
        from sqlalchemy import update

        from launcher.rundb.models import SweepDecision

        with self.registry._write() as connection:
            connection.execute(update(SweepDecision).where(
                SweepDecision.sweep_id == sweep_id, SweepDecision.cell == cell, SweepDecision.rung == rung)
                .values(acted=time.time()))

    def decisions(self, sweep_id: str) -> list[Decision]:
        from sqlalchemy import select

        from launcher.rundb.models import SweepDecision

        with self.registry._read() as connection:
            rows = connection.execute(select(SweepDecision).where(SweepDecision.sweep_id == sweep_id)
                                      .order_by(SweepDecision.id)).mappings().all()
        return [_decision(row) for row in rows]


def request_of(record: SweepRecord) -> LaunchRequest:
    """The launch each of the sweep's cells is planned from, as the sweep's launch asked."""
    asked = record.request
    return LaunchRequest(asked["recipe"], asked["target"], profile=asked.get("profile"),
                         overrides=tuple(asked.get("overrides") or ()), chaos=asked.get("chaos"),
                         max_parallel=asked.get("max_parallel"), sweep_id=record.sweep_id)


def sweep_dir(project_dir: Path, sweep_id: str) -> Path:
    """Where a sweep's files go (its controller's log, its summary): runs/sweeps/<sweep id>/."""
    return Path(project_dir) / "runs" / "sweeps" / sweep_id


def _record(row) -> SweepRecord:
    values = {name: row[name] for name in SweepRecord.__dataclass_fields__}
    return SweepRecord(**{**values, "state": SweepState(values["state"])})


def _decision(row) -> Decision:
    values = {name: row[name] for name in Decision.__dataclass_fields__}
    return Decision(**{**values, "verdict": Verdict(values["verdict"])})
