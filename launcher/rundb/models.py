"""The tables. States are stored as their string values (a new RunState value needs no migration)."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    """One run (a `RunRecord`). `run_id` names a run across the whole database: run ids are also the keys of
    checkpoint stores and MLflow tags, so they are global already. `registry_project` is the project whose
    registry listed it (the resolved project directory of the `Registry` that saved it): `all()` filters on it."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    registry_project: Mapped[str] = mapped_column(Text, index=True)
    recipe: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    started: Mapped[float] = mapped_column(Float, index=True)
    store: Mapped[str] = mapped_column(Text)
    local_dir: Mapped[str] = mapped_column(Text)
    tracking_uri: Mapped[str] = mapped_column(Text)
    handle: Mapped[dict] = mapped_column(Json)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    ended: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    log: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    project: Mapped[str] = mapped_column(Text, default="")
    recipe_document: Mapped[str] = mapped_column(Text, default="")
    sweep_id: Mapped[Optional[str]] = mapped_column(String(255), nullable=True, index=True)
    cell: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    launched_by: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    task: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    # the run's ledger summary as last read (`LedgerSummary`): written only by `Registry.cache_ledger`
    goodput: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    device_hours: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    device_unit: Mapped[Optional[str]] = mapped_column(String(8), nullable=True)
    ledger_read: Mapped[Optional[float]] = mapped_column(Float, nullable=True)


class LiveAttempt(Base):
    """The one live attempt of a run: the primary key makes a second claim of a run id fail in the database.
    The row goes when the run's state becomes terminal (in the same transaction). `launcher` is `host:pid` of
    the launch that claimed it while it is still handing the run to its target (NULL once launched)."""

    __tablename__ = "live_attempts"

    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    claimed: Mapped[float] = mapped_column(Float)
    launcher: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class JsonImport(Base):
    """A project whose `runs/registry/*.json` were imported (once)."""

    __tablename__ = "json_imports"

    project: Mapped[str] = mapped_column(Text, primary_key=True)
    imported: Mapped[float] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[list] = mapped_column(Json)


class SweepRow(Base):
    """A sweep a controller explores (`launcher.sweeps.controller`): what the launch asked for (`request`: recipe,
    target, profile, overrides; the controller plans each cell from it), the search, the sweep's state, and the
    controller holding it (`host:pid`, its last heartbeat)."""

    __tablename__ = "sweeps"

    sweep_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    registry_project: Mapped[str] = mapped_column(Text, index=True)
    recipe: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict] = mapped_column(Json)
    search: Mapped[dict] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(16))
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    controller: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    heartbeat: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    parent_run: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class SweepDecision(Base):
    """One judgement of one cell at one rung (asha, hyperband: the rung's index; median: the evaluation step):
    promoted or pruned, the metric and budget it was judged at, when the value was reported (MLflow's timestamp),
    decided, and acted on (the pruned cell's stop handed to its target)."""

    __tablename__ = "sweep_decisions"
    __table_args__ = (UniqueConstraint("sweep_id", "cell", "rung", name="one_decision_per_rung"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(String(255), ForeignKey("sweeps.sweep_id", ondelete="CASCADE"), index=True)
    cell: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(255))
    rung: Mapped[int] = mapped_column(Integer)
    budget: Mapped[float] = mapped_column(Float)
    value: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16))
    decided: Mapped[float] = mapped_column(Float)
    reported: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    acted: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
